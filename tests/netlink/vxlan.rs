//! vxlan devices, the FDB and neighbours; an overlay between two sandbox hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use cni_shared::mac::Mac;
use cni_shared::netlink::{AddrOpts, Family, Netlink, VethOpts, VxlanOpts};
use cni_tests::testkit::{ping, Sandbox};

use super::{get, ip, mac, net, nl, veth_pair};

fn vx(vni: u32, local: &str, dev: u32) -> VxlanOpts {
    VxlanOpts {
        vni,
        port: Some(4789),
        local: Some(ip(local)),
        dev: Some(dev),
        learning: false,
        mtu: Some(1450),
        up: true,
        ..VxlanOpts::default()
    }
}

#[test]
fn vxlan_settings_fdb_and_neighbours() {
    let sb = Sandbox::new("vx");
    let nl = nl(&sb);
    let (ul, _) = veth_pair(&nl, &sb, "ul0", "ul0p");
    nl.add_address(ul.index, net("192.168.50.1/24"), &AddrOpts::default())
        .unwrap();

    let l = nl
        .create_vxlan("vxlan42", &vx(42, "192.168.50.1", ul.index))
        .unwrap();
    assert!(l.is_kind("vxlan") && l.up && l.mtu == 1450, "{l:?}");
    let v = l.vxlan.unwrap();
    assert_eq!((v.vni, v.port, v.dev), (42, 4789, Some(ul.index)));
    assert_eq!(v.local, Some(Ipv4Addr::new(192, 168, 50, 1)));
    assert!(!v.learning);
    let shown = sb.ip(&["-d", "link", "show", "vxlan42"]);
    assert!(
        shown.contains("vxlan id 42") && shown.contains("nolearning"),
        "{shown}"
    );

    // ensure_vxlan reuses a matching device and refuses a different VNI.
    assert_eq!(
        nl.ensure_vxlan("vxlan42", &vx(42, "192.168.50.1", ul.index))
            .unwrap()
            .index,
        l.index
    );
    let e = nl
        .ensure_vxlan("vxlan42", &vx(43, "192.168.50.1", ul.index))
        .unwrap_err();
    assert!(e.msg.contains("not a vxlan with vni 43"), "{}", e.msg);
    assert!(nl
        .create_vxlan("vxlan42", &vx(42, "192.168.50.1", ul.index))
        .unwrap_err()
        .msg
        .contains("File exists"));

    // IPv6 underlay, a multicast group, learning on.
    let o6 = VxlanOpts {
        vni: 7,
        local: Some(ip("fd00:50::1")),
        learning: true,
        ..VxlanOpts::default()
    };
    let v6 = nl.create_vxlan("vx6", &o6).unwrap().vxlan.unwrap();
    assert_eq!(v6.local6, Some("fd00:50::1".parse::<Ipv6Addr>().unwrap()));
    assert!(v6.learning && v6.local.is_none());
    let og = VxlanOpts {
        vni: 8,
        group: Some(ip("239.1.1.1")),
        dev: Some(ul.index),
        ..VxlanOpts::default()
    };
    let vg = nl.create_vxlan("vxg", &og).unwrap().vxlan.unwrap();
    assert_eq!(vg.group, Some(Ipv4Addr::new(239, 1, 1, 1)));

    // Two all-zero entries coexist (append), appending one again changes nothing.
    let (d2, d3) = (ip("192.168.50.2"), ip("192.168.50.3"));
    nl.append_fdb(l.index, Mac::ZERO, d2).unwrap();
    nl.append_fdb(l.index, Mac::ZERO, d3).unwrap();
    nl.append_fdb(l.index, Mac::ZERO, d2).unwrap();
    let zero_dsts = |nl: &Netlink| -> Vec<IpAddr> {
        let mut d: Vec<_> = nl
            .fdb(l.index)
            .unwrap()
            .into_iter()
            .filter(|e| e.mac.is_zero())
            .map(|e| {
                assert!(e.permanent && !e.master, "{e:?}");
                e.dst.unwrap()
            })
            .collect();
        d.sort();
        d
    };
    assert_eq!(zero_dsts(&nl), vec![d2, d3]);
    let shown =
        String::from_utf8_lossy(&sb.exec("bridge", &["fdb", "show", "dev", "vxlan42"]).stdout)
            .into_owned();
    assert_eq!(shown.matches("00:00:00:00:00:00 dst").count(), 2, "{shown}");

    assert!(nl.delete_fdb(l.index, Mac::ZERO, Some(d2)).unwrap());
    assert!(!nl.delete_fdb(l.index, Mac::ZERO, Some(d2)).unwrap());
    assert_eq!(zero_dsts(&nl), vec![d3]);

    // A unicast MAC has one destination: replace moves it.
    let remote = mac("0a:58:c0:a8:32:02");
    nl.replace_fdb(l.index, remote, d2).unwrap();
    nl.replace_fdb(l.index, remote, d3).unwrap();
    let entries: Vec<_> = nl
        .fdb(l.index)
        .unwrap()
        .into_iter()
        .filter(|e| e.mac == remote)
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].dst, Some(d3));
    assert!(nl.delete_fdb(l.index, remote, None).unwrap());

    // Permanent neighbours (flannel programs the remote gateway's MAC this way).
    let gw = ip("10.244.1.0");
    nl.set_neighbour(l.index, gw, remote).unwrap();
    nl.set_neighbour(l.index, gw, remote).unwrap();
    let n = nl.neighbours(l.index, Some(Family::V4)).unwrap();
    assert!(
        n.iter()
            .any(|x| x.ip == gw && x.mac == Some(remote) && x.permanent),
        "{n:?}"
    );
    assert!(nl.delete_neighbour(l.index, gw).unwrap());
    assert!(!nl.delete_neighbour(l.index, gw).unwrap());
    assert!(nl
        .neighbours(l.index, None)
        .unwrap()
        .iter()
        .all(|x| x.ip != gw));
}

#[test]
fn vxlan_overlay_between_two_hosts_pings() {
    let a = Sandbox::new("oa");
    let b = Sandbox::new("ob");
    let (na, nb) = (nl(&a), nl(&b));
    let up = VethOpts {
        host_up: true,
        ..VethOpts::default()
    };
    let ula = na.create_veth(Some("ul"), "ul", &b.netns(), &up).unwrap();
    nb.set_up("ul").unwrap();
    let ulb = get(&nb, "ul");
    na.add_address(ula.index, net("192.168.60.1/24"), &AddrOpts::default())
        .unwrap();
    nb.add_address(ulb.index, net("192.168.60.2/24"), &AddrOpts::default())
        .unwrap();
    for (n, ul, local, remote, overlay) in [
        (&na, &ula, "192.168.60.1", "192.168.60.2", "10.99.0.1/24"),
        (&nb, &ulb, "192.168.60.2", "192.168.60.1", "10.99.0.2/24"),
    ] {
        let l = n
            .ensure_vxlan("vxlan100", &vx(100, local, ul.index))
            .unwrap();
        n.append_fdb(l.index, Mac::ZERO, ip(remote)).unwrap();
        n.add_address(l.index, net(overlay), &AddrOpts::default())
            .unwrap();
    }
    assert!(ping(&a, ip("10.99.0.2"), Duration::from_secs(10)));
}

#[test]
fn vxlan_ipv6_underlay_flood_entries() {
    let sb = Sandbox::new("vx6fdb");
    let nl = nl(&sb);
    let (ul, _) = veth_pair(&nl, &sb, "ul0", "ul0p");
    nl.add_address(ul.index, net("2001:db8::1/64"), &AddrOpts { nodad: true })
        .unwrap();
    let o = VxlanOpts {
        local: Some(ip("2001:db8::1")),
        ..vx(61, "2001:db8::1", ul.index)
    };
    let l = nl.create_vxlan("vxlan61", &o).unwrap();
    assert_eq!(
        l.vxlan.unwrap().local6,
        Some("2001:db8::1".parse::<Ipv6Addr>().unwrap())
    );
    let (d2, d3) = (ip("2001:db8::2"), ip("fd00::3"));
    nl.append_fdb(l.index, Mac::ZERO, d2).unwrap();
    nl.append_fdb(l.index, Mac::ZERO, d3).unwrap();
    let mut dsts: Vec<IpAddr> = nl
        .fdb(l.index)
        .unwrap()
        .into_iter()
        .filter(|e| e.mac.is_zero())
        .filter_map(|e| e.dst)
        .collect();
    dsts.sort();
    assert_eq!(dsts, vec![d2, d3]);
    let shown =
        String::from_utf8_lossy(&sb.exec("bridge", &["fdb", "show", "dev", "vxlan61"]).stdout)
            .into_owned();
    assert!(
        shown.contains("dst 2001:db8::2") && shown.contains("dst fd00::3"),
        "{shown}"
    );
    assert!(nl.delete_fdb(l.index, Mac::ZERO, Some(d2)).unwrap());
    assert!(!nl.delete_fdb(l.index, Mac::ZERO, Some(d2)).unwrap());
    assert_eq!(nl.fdb(l.index).unwrap().len(), 1);
}
