//! Link changes (rename, mtu, mac, netns), sysctls, and using handles from several threads.

use std::time::Duration;

use cni_shared::netlink::{BridgeOpts, Family, Netlink};
use cni_shared::sysctl;
use cni_tests::testkit::{wait_until, Sandbox};

use super::{get, mac, nl, veth_pair};

#[test]
fn rename_set_and_move_links() {
    let host = Sandbox::new("rn");
    let ctr = Sandbox::new("rc");
    let h = nl(&host);
    let (l, _) = veth_pair(&h, &host, "old0", "old0p");

    h.set_down("old0").unwrap();
    assert!(!get(&h, "old0").up);
    h.rename("old0", "new.0").unwrap();
    assert_eq!(h.link("old0").unwrap(), None);
    let n = get(&h, "new.0");
    assert_eq!(n.index, l.index);
    h.rename(n.index, "newer0").unwrap();
    let e = h.rename("old0", "x").unwrap_err();
    assert!(e.msg.contains("no such link"), "{}", e.msg);

    let m = mac("0a:58:01:02:03:04");
    h.set_mtu("newer0", 1280).unwrap();
    h.set_mac(l.index, m).unwrap();
    h.set_up(l.index).unwrap();
    let n = get(&h, "newer0");
    assert_eq!((n.mtu, n.mac, n.up), (1280, Some(m), true));
    let e = h.set_mtu("newer0", 10).unwrap_err();
    // errno text plus the kernel's extended-ack explanation.
    assert_eq!(
        e.msg,
        "setting mtu 10 on link newer0: Invalid argument (os error 22) \
         (mtu less than device minimum)"
    );
    assert!(h
        .set_up("missing0")
        .unwrap_err()
        .msg
        .contains("No such device"));

    h.move_to_netns("newer0", &ctr.netns()).unwrap();
    assert_eq!(h.link("newer0").unwrap(), None);
    assert!(ctr.has_link("newer0"));
    assert_eq!(get(&nl(&ctr), "newer0").mtu, 1280);
}

#[test]
fn sysctl_is_per_namespace() {
    let sb = Sandbox::new("sc");
    let key = ["net", "ipv4", "ip_forward"];
    let machine = sysctl::get(&key).unwrap().unwrap();
    let want = if machine == "1" { "0" } else { "1" };
    let ns = sb.netns();
    assert!(ns.run(|| sysctl::set(&key, want)).unwrap().unwrap());
    assert_eq!(
        ns.run(|| sysctl::get(&key)).unwrap().unwrap().as_deref(),
        Some(want)
    );
    let seen = sb.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), want);
    assert_eq!(
        sysctl::get(&key).unwrap().unwrap(),
        machine,
        "the machine's value changed"
    );

    // Interface names with dots are one component; a missing interface is not an error.
    nl(&sb)
        .create_bridge("br.5", &BridgeOpts::default())
        .unwrap();
    let fwd = ["net", "ipv4", "conf", "br.5", "forwarding"];
    assert!(ns.run(|| sysctl::set(&fwd, "1")).unwrap().unwrap());
    assert_eq!(
        ns.run(|| sysctl::get(&fwd)).unwrap().unwrap().as_deref(),
        Some("1")
    );
    let gone = ["net", "ipv6", "conf", "nope0", "accept_dad"];
    assert_eq!(ns.run(|| sysctl::get(&gone)).unwrap().unwrap(), None);
    assert!(!ns.run(|| sysctl::set(&gone, "0")).unwrap().unwrap());
}

/// Forwarding (`RTM_GETNETCONF`) and a link's `route_localnet` (`IFLA_INET_CONF`) read and
/// written through netlink agree with `/proc/sys` of the same namespace, and stay in it.
#[test]
fn forwarding_and_route_localnet_through_netlink() {
    let sb = Sandbox::new("nc");
    let ns = sb.netns();
    let h = nl(&sb);
    let read = |f: Family| h.forwarding(f).unwrap();
    let proc = |key: &str| {
        let out = sb.exec("cat", &[&format!("/proc/sys/net/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let here = Netlink::current().unwrap();
    let machine = here.forwarding(Family::V4).unwrap();
    for (family, key) in [
        (Family::V4, "ipv4/ip_forward"),
        (Family::V6, "ipv6/conf/all/forwarding"),
    ] {
        // (A new namespace may inherit IPv4's from the machine.)
        let parts: Vec<&str> = std::iter::once("net").chain(key.split('/')).collect();
        for (value, on) in [("0", false), ("1", true)] {
            assert!(ns.run(|| sysctl::set(&parts, value)).unwrap().unwrap());
            assert_eq!(read(family), Some(on), "{key}");
            assert_eq!(proc(key), value);
        }
    }
    assert_eq!(
        here.forwarding(Family::V4).unwrap(),
        machine,
        "the machine's value changed"
    );

    h.create_bridge("lo-br0", &BridgeOpts::default()).unwrap();
    assert!(!get(&h, "lo-br0").route_localnet);
    h.set_route_localnet("lo-br0").unwrap();
    assert!(get(&h, "lo-br0").route_localnet);
    assert_eq!(proc("ipv4/conf/lo-br0/route_localnet"), "1");
    let e = h.set_route_localnet("missing0").unwrap_err();
    assert!(
        e.msg.contains("route_localnet") && e.msg.contains("missing0"),
        "{}",
        e.msg
    );
}

/// A container's key written through our own procfs instance lands in the container's
/// namespace (the thread's, not the mount's), and only there. Where the kernel or a seccomp
/// filter refuses that instance, the same holds through `/proc`, and the test says so.
#[test]
fn sysctl_in_a_container_through_our_own_proc() {
    if !sysctl::has_own_proc() {
        eprintln!(
            "SKIPPED (the part through our own procfs instance): fsopen(\"proc\") refused \
             here (kernel before 5.2 or a seccomp filter); checking the /proc fallback"
        );
    }
    let sb = Sandbox::new("sp");
    let key = ["net", "ipv6", "conf", "default", "accept_dad"];
    let machine = sysctl::get(&key).unwrap().unwrap();
    let want = if machine == "0" { "2" } else { "0" };
    let ns = sb.netns();
    assert!(ns
        .run(|| sysctl::set_in_container(&key, want))
        .unwrap()
        .unwrap());
    let seen = sb.exec("cat", &["/proc/sys/net/ipv6/conf/default/accept_dad"]);
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), want);
    assert_eq!(
        sysctl::get(&key).unwrap().unwrap(),
        machine,
        "host untouched"
    );
    let gone = ["net", "ipv6", "conf", "nope0", "accept_dad"];
    assert!(!ns
        .run(|| sysctl::set_in_container(&gone, "0"))
        .unwrap()
        .unwrap());
    assert_eq!(
        ns.run(|| sysctl::set_in_container(&["kernel", "x"], "0"))
            .unwrap()
            .unwrap_err()
            .code,
        7
    );
}

#[test]
fn handles_work_from_several_threads() {
    let host = Sandbox::new("th");
    let ctr = Sandbox::new("tc");
    let h = nl(&host);
    h.create_bridge("br-th", &BridgeOpts::default()).unwrap();

    // Inside a NetNs::run closure: current() sees the container, and the host handle (created
    // on the test thread) keeps acting on the host, while the test thread waits in run().
    let ctr_ns = ctr.netns();
    let (inside, host_seen) = ctr_ns
        .run(|| {
            let c = Netlink::current().unwrap();
            c.create_bridge("br-in", &BridgeOpts::default()).unwrap();
            (c.link("br-th").unwrap(), h.link("br-th").unwrap())
        })
        .unwrap();
    assert_eq!(inside, None, "br-th is a host link");
    assert!(host_seen.is_some());
    assert!(ctr.has_link("br-in") && !host.has_link("br-in"));

    // Handles opened and dropped in a loop neither leak sockets nor hang, and a dropped handle
    // closes its socket at once (an open socket pins its namespace). Counted inside `ctr`,
    // where no other test has sockets.
    let route_sockets = || {
        ctr.netns()
            .run(|| {
                let t = std::fs::read_to_string("/proc/thread-self/net/netlink").unwrap();
                t.lines()
                    .skip(1)
                    .filter(|l| l.split_whitespace().nth(1) == Some("0"))
                    .count()
            })
            .unwrap()
    };
    let base = route_sockets();

    // Concurrent callers on one handle and on separate handles.
    let c = nl(&ctr);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (h, c) = (&h, &c);
            s.spawn(move || {
                for _ in 0..50 {
                    assert!(h.link("br-th").unwrap().is_some(), "thread {t}");
                    assert!(c.link("br-in").unwrap().is_some(), "thread {t}");
                }
            });
        }
    });
    drop(c);
    // A socket closed while another test's thread drives the shared runtime may stay listed
    // for a moment (see below): let the count settle before taking it, and after the loop.
    wait_until(Duration::from_secs(1), || route_sockets() <= base);
    let before = route_sockets();
    for _ in 0..100 {
        assert!(nl(&ctr).link("lo").unwrap().is_some());
    }
    assert!(
        wait_until(Duration::from_secs(1), || route_sockets() == before),
        "100 handles opened and dropped leave {} sockets, not {before}",
        route_sockets()
    );
    let one = nl(&ctr);
    assert!(one.link("lo").unwrap().is_some());
    assert_eq!(route_sockets(), before + 1);
    drop(one);
    // The kernel may take a moment to unlist a socket closed by another thread.
    assert!(
        wait_until(Duration::from_secs(1), || route_sockets() == before),
        "closed by drop, not whenever the runtime runs next"
    );
}

/// nfnetlink answers EINVAL both to a request it cannot parse and to one for a subsystem the
/// kernel lacks (nf_tables or ctnetlink not built in): `Nfnl::request` tells them apart with the
/// subsystem's probe, so that a DEL or GC on a kernel without nf_tables finds "nothing there"
/// (EOPNOTSUPP) instead of failing.
#[test]
fn nfnetlink_tells_a_missing_subsystem_from_a_bad_request() {
    use cni_shared::firewall::nftset::IPV4;
    use cni_shared::nfnl::{Nfnl, NLM_F_ACK, NLM_F_REQUEST, SUBSYS_CTNETLINK, SUBSYS_NFTABLES};
    const EINVAL: i32 = 22;
    let sb = Sandbox::new("nfp");
    let mut nl = sb.netns().run(Nfnl::open).unwrap().unwrap();
    assert_eq!(nl.has_subsystem(SUBSYS_NFTABLES), Some(true));
    assert_eq!(nl.has_subsystem(SUBSYS_CTNETLINK), Some(true));
    // Subsystem 15 does not exist (NFNL_SUBSYS_COUNT is 13 on Linux 6.x): the kernel's
    // answer to a missing one, whatever the message.
    assert_eq!(nl.probe(15 << 8), Some(false));
    assert_eq!(nl.has_subsystem(15), None, "no probe known for it");
    // A request nf_tables cannot parse (a table lookup without a name) stays EINVAL: the
    // subsystem is there.
    let get_table = (SUBSYS_NFTABLES << 8) | 1;
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let e = nl.request(get_table, flags, IPV4, &[]).unwrap_err();
    assert_eq!(e.errno, EINVAL, "{e:?}");
    // As does one of a subsystem without a probe.
    let e = nl.request(15 << 8, flags, 0, &[]).unwrap_err();
    assert_eq!(e.errno, EINVAL, "{e:?}");
}
