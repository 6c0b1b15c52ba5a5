//! The shared container-side setup (`cni_shared::container`) against the kernel.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cni_shared::container::{check_iface, configure_iface, interface_of, IfaceOpts};
use cni_shared::netlink::{AddrGenMode, Address, Family, Link, Netlink, VethOpts};
use cni_shared::spec::{CniResult, Version};
use cni_tests::testkit::{ping, Sandbox};
use serde_json::json;

#[test]
fn configure_then_check_a_dual_stack_interface() {
    let host = Sandbox::new("ct-host");
    let ctr = Sandbox::new("ct-ctr");
    let hns = host.netns();
    let cns = ctr.netns();
    let hnl = Netlink::open_in(&hns).unwrap();
    let cnl = Netlink::open_in(&cns).unwrap();
    let veth = hnl
        .create_veth(
            None,
            "eth0",
            &cns,
            &VethOpts {
                mtu: Some(1400),
                host_up: true,
                ..VethOpts::default()
            },
        )
        .unwrap();
    host.ip(&["addr", "add", "10.77.0.1/24", "dev", &veth.name]);
    host.ip(&[
        "-6",
        "addr",
        "add",
        "fd77::1/64",
        "dev",
        &veth.name,
        "nodad",
    ]);
    let (_, result) = CniResult::from_value(
        &json!({"cniVersion": "1.1.0",
                "ips": [{"address": "10.77.0.2/24", "gateway": "10.77.0.1", "interface": 0},
                        {"address": "fd77::2/64", "gateway": "fd77::1", "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"},
                           {"dst": "192.168.77.0/24", "gw": "10.77.0.1", "mtu": 1300}]}),
        Version::V1_1_0,
    )
    .unwrap();
    let link = configure_iface(&cns, &cnl, "eth0", &result, 0, IfaceOpts::default()).unwrap();
    assert!(link.up || cnl.link("eth0").unwrap().unwrap().up);
    let routes = ctr.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 10.77.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("192.168.77.0/24 via 10.77.0.1 dev eth0") && routes.contains("mtu 1300"),
        "{routes}"
    );
    let routes6 = ctr.ip(&["-6", "route", "show"]);
    assert!(
        routes6.contains("default via fd77::1 dev eth0"),
        "{routes6}"
    );
    // DAD is off: IPv6 is usable at once, the link-local address included (added by us
    // as the kernel makes it, without DAD), and the container's sysctls are left alone.
    assert_no_dad_link_local(&cnl, &link);
    assert_eq!(
        ctr.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/accept_dad"])
            .stdout,
        b"1\n"
    );
    let details = ctr.ip(&["-d", "link", "show", "eth0"]);
    assert!(details.contains("addrgenmode eui64"), "{details}");
    assert!(ping(
        &ctr,
        "10.77.0.1".parse().unwrap(),
        Duration::from_secs(5)
    ));
    assert!(ping(
        &ctr,
        "fd77::1".parse().unwrap(),
        Duration::from_secs(5)
    ));
    check_iface(&cnl, "eth0", &result, 0, IfaceOpts::default()).unwrap();
    let iface = interface_of(&link, Some(&cns));
    assert_eq!(iface.name, "eth0");
    assert_eq!(iface.sandbox, ctr.path().display().to_string());
    assert_eq!(iface.mtu, Some(1400));

    ctr.ip(&["addr", "del", "10.77.0.2/24", "dev", "eth0"]);
    let e = check_iface(&cnl, "eth0", &result, 0, IfaceOpts::default()).unwrap_err();
    assert!(e.msg.contains("10.77.0.2/24"), "{}", e.msg);
}

fn link_locals(nl: &Netlink, link: &Link) -> Vec<Address> {
    nl.addresses(Some(link.index), Some(Family::V6))
        .expect("listing addresses")
        .into_iter()
        .filter(|a| a.net.ip().to_string().starts_with("fe80:"))
        .collect()
}

/// One IPv6 link-local address on `link`: the EUI-64 of its MAC (what the kernel makes), not
/// going through DAD.
fn assert_no_dad_link_local(nl: &Netlink, link: &Link) {
    let lls = link_locals(nl, link);
    assert_eq!(lls.len(), 1, "{lls:?}");
    let mac = link.mac.expect("a veth has a MAC");
    assert_eq!(
        lls[0].net.ip(),
        IpAddr::V6(mac.ipv6_link_local()),
        "{lls:?}"
    );
    assert_eq!(lls[0].net.prefix(), 64);
    assert!(!lls[0].tentative && !lls[0].dadfailed, "{lls:?}");
}

/// `eth0` in `ctr`, down, the peer of an up veth in `host`; the container's namespace and a
/// netlink socket in it.
fn ctr_with_eth0(host: &Sandbox, ctr: &Sandbox) -> (cni_shared::netns::NetNs, Netlink) {
    let cns = ctr.netns();
    let cnl = Netlink::open_in(&cns).unwrap();
    Netlink::open_in(&host.netns())
        .unwrap()
        .create_veth(
            None,
            "eth0",
            &cns,
            &VethOpts {
                host_up: true,
                ..VethOpts::default()
            },
        )
        .unwrap();
    (cns, cnl)
}

/// A link whose addrgenmode is not eui64 (a host that set `stable_secret`, or `random`): its
/// link-local address cannot be made ahead, so DAD is turned off through `/proc/sys` as the
/// reference does, and the kernel's address is the only one.
#[test]
fn dad_off_on_a_link_in_another_addrgenmode_uses_the_sysctl() {
    let (host, ctr) = (Sandbox::new("ct3-host"), Sandbox::new("ct3-ctr"));
    let (cns, cnl) = ctr_with_eth0(&host, &ctr);
    ctr.ip(&["link", "set", "eth0", "addrgenmode", "random"]);
    let (_, result) = CniResult::from_value(
        &json!({"cniVersion": "1.1.0",
                "ips": [{"address": "fd79::2/64", "interface": 0}]}),
        Version::V1_1_0,
    )
    .unwrap();
    let link = configure_iface(&cns, &cnl, "eth0", &result, 0, IfaceOpts::default()).unwrap();
    assert_eq!(
        ctr.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/accept_dad"])
            .stdout,
        b"0\n"
    );
    let fresh = cnl.link(link.index).unwrap().unwrap();
    assert_eq!(fresh.ipv6_addr_gen, Some(AddrGenMode::Other), "{fresh:?}");
    // The kernel's address passes its DAD step in a worker a moment after the link is up
    // (with DAD on it would stay tentative for a second at least).
    let deadline = Instant::now() + Duration::from_millis(500);
    let lls = loop {
        let lls = link_locals(&cnl, &link);
        if lls.iter().all(|a| !a.tentative) || Instant::now() > deadline {
            break lls;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(lls.len(), 1, "the kernel's random one only: {lls:?}");
    assert_ne!(
        lls[0].net.ip(),
        IpAddr::V6(fresh.mac.unwrap().ipv6_link_local()),
        "{lls:?}"
    );
    assert!(!lls[0].tentative && !lls[0].dadfailed, "{lls:?}");
}

#[test]
fn neighbour_notify_and_no_link_local_are_set_by_netlink_and_checked() {
    let (host, ctr) = (Sandbox::new("ct2-host"), Sandbox::new("ct2-ctr"));
    let (cns, cnl) = ctr_with_eth0(&host, &ctr);
    let (_, result) = CniResult::from_value(
        &json!({"cniVersion": "1.1.0",
                "ips": [{"address": "10.78.0.2/24", "interface": 0}]}),
        Version::V1_1_0,
    )
    .unwrap();
    let opts = IfaceOpts {
        enable_dad: false,
        notify_neighbours: true,
        no_ipv6_link_local: true,
    };
    let link = configure_iface(&cns, &cnl, "eth0", &result, 0, opts).unwrap();
    let sysctl = |key: &str| {
        let out = ctr.exec("cat", &[&format!("/proc/sys/net/{key}")]).stdout;
        String::from_utf8_lossy(&out).trim().to_string()
    };
    assert_eq!(sysctl("ipv4/conf/eth0/arp_notify"), "1");
    // IPv4-only: the IPv6 settings are left as they were.
    assert_eq!(sysctl("ipv6/conf/eth0/ndisc_notify"), "0");
    assert_eq!(sysctl("ipv6/conf/eth0/accept_dad"), "1");
    let details = ctr.ip(&["-d", "link", "show", "eth0"]);
    assert!(details.contains("addrgenmode none"), "{details}");
    let fresh = cnl.link(link.index).unwrap().unwrap();
    assert!(fresh.arp_notify, "{fresh:?}");
    assert_eq!(fresh.ipv6_addr_gen, Some(AddrGenMode::None), "{fresh:?}");
    check_iface(&cnl, "eth0", &result, 0, opts).unwrap();
    // What default options ask for is not what CHECK holds against the interface.
    check_iface(&cnl, "eth0", &result, 0, IfaceOpts::default()).unwrap();

    ctr.ip(&["link", "set", "eth0", "addrgenmode", "eui64"]);
    let e = check_iface(&cnl, "eth0", &result, 0, opts).unwrap_err();
    assert!(e.msg.contains("addrgenmode"), "{}", e.msg);
    ctr.ip(&["link", "set", "eth0", "addrgenmode", "none"]);
    check_iface(&cnl, "eth0", &result, 0, opts).unwrap();

    let off = ctr.exec(
        "sh",
        &["-c", "echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_notify"],
    );
    assert!(off.status.success(), "{off:?}");
    let e = check_iface(&cnl, "eth0", &result, 0, opts).unwrap_err();
    assert!(e.msg.contains("arp_notify"), "{}", e.msg);
}
