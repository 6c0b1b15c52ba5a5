//! The shared device over time: peers changing, a device that does not match, concurrent ADDs,
//! DEL, CHECK, STATUS and GC.

use cni_shared::skel::Command;
use cni_tests::testkit::Sandbox;
use serde_json::json;

use super::{add, blocked, call, check, del, ip_of, pair, pings, switched};

#[test]
fn changing_peers_and_re_adding_updates_the_flood_entries() {
    let (_switch, hosts) = switched("vx-peers", 3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let (c1, c1b, c2, c3) = (
        Sandbox::new("vx-peers-c1"),
        Sandbox::new("vx-peers-c1b"),
        Sandbox::new("vx-peers-c2"),
        Sandbox::new("vx-peers-c3"),
    );
    let all = json!({"peers": [h1.v4(), h2.v4(), h3.v4()], "underlay": "ul0"});
    let r2 = add(h2, &h2.conf(9, all.clone()), "c2", &c2);
    let r3 = add(h3, &h3.conf(9, all.clone()), "c3", &c3);

    let only_h2 = h1.conf(9, json!({"peers": [h2.v4()], "underlay": "ul0"}));
    let r1 = add(h1, &only_h2, "c1", &c1);
    assert_eq!(h1.flood("vxlan9"), vec![h2.v4()]);
    assert!(pings(&c1, ip_of(&r2)), "h1 floods to h2");

    // The config changes to h3 only; the next ADD on h1 reprograms the shared device.
    let only_h3 = h1.conf(9, json!({"peers": [h3.v4()], "underlay": "ul0"}));
    let r1b = add(h1, &only_h3, "c1b", &c1b);
    assert_eq!(h1.flood("vxlan9"), vec![h3.v4()]);
    assert!(pings(&c1b, ip_of(&r3)), "h1 floods to h3 now");
    assert!(blocked(&c1b, ip_of(&r2)), "no flooding to h2 any more");
    check(h1, &only_h3, &r1b, "c1b", &c1b).unwrap();
    let e = check(h1, &only_h2, &r1, "c1", &c1).unwrap_err();
    assert!(
        e.msg
            .contains("peers: vxlan9 has no flood entry for 192.0.2.2"),
        "{}",
        e.msg
    );

    // Back to both: two entries, in any order of ADDs.
    let both = h1.conf(9, all);
    del(h1, &only_h2, "c1", Some(&c1));
    let r1 = add(h1, &both, "c1", &c1);
    assert_eq!(h1.flood("vxlan9"), vec![h2.v4(), h3.v4()]);
    assert!(pings(&c1, ip_of(&r2)) && pings(&c1, ip_of(&r3)));
    check(h1, &both, &r1, "c1", &c1).unwrap();
}

#[test]
fn an_existing_device_with_other_settings_is_refused() {
    let (a, b) = pair("vx-mis");
    let ctr = Sandbox::new("vx-mis-c");
    let conf = a.conf(42, json!({"peers": [b.v4()], "underlay": "ul0"}));
    // `ip link add vxlan42 [mtu M] type vxlan <args>`.
    let vx = |mtu: Option<&str>, args: &[&str]| {
        a.sb.try_ip(&["link", "del", "vxlan42"]);
        let mut cmd = vec!["link", "add", "vxlan42"];
        if let Some(m) = mtu {
            cmd.extend(["mtu", m]);
        }
        cmd.extend(["type", "vxlan"]);
        cmd.extend_from_slice(args);
        a.sb.ip(&cmd);
    };
    let with = |first: &[&'static str], local: &'static str, port: &'static str| {
        let mut v = first.to_vec();
        v.extend(["dstport", port, "local", local, "dev", "ul0"]);
        v
    };
    let v4 = "192.0.2.1";
    let cases = [
        (
            None,
            with(&["id", "43"], v4, "4789"),
            "vni: existing vxlan42 has VNI 43",
        ),
        (
            None,
            with(&["id", "42"], v4, "8472"),
            "port: existing vxlan42 uses UDP port 8472, not 4789",
        ),
        (
            None,
            with(&["id", "42"], "2001:db8::1", "4789"),
            "local: existing vxlan42 has local address 2001:db8::1, not 192.0.2.1",
        ),
        (
            None,
            with(&["id", "42", "nolearning"], v4, "4789"),
            "learning: existing vxlan42 has learning off, not on",
        ),
        (
            Some("1400"),
            with(&["id", "42"], v4, "4789"),
            "mtu: existing vxlan42 has MTU 1400, not 1450",
        ),
    ];
    for (mtu, args, want) in cases {
        vx(mtu, &args);
        let e = call(&a, Command::Add, &conf, "c", Some(&ctr)).unwrap_err();
        assert_eq!(e.code, 7, "{}", e.msg);
        assert!(e.msg.starts_with(want), "{want:?}: {}", e.msg);
        assert!(!ctr.has_link("eth0"), "nothing created in the container");
    }
    a.sb.ip(&["link", "del", "vxlan42"]);
    a.sb.ip(&["link", "add", "vxlan42", "type", "bridge"]);
    let e = call(&a, Command::Add, &conf, "c", Some(&ctr)).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(
        e.msg
            .starts_with("vni: link vxlan42 already exists and is not a vxlan"),
        "{}",
        e.msg
    );
    a.sb.ip(&["link", "del", "vxlan42"]);
    // Another name, same VNI, port and family: the kernel refuses a second one.
    a.sb.ip(&[
        "link", "add", "other42", "type", "vxlan", "id", "42", "dstport", "4789",
    ]);
    let e = call(&a, Command::Add, &conf, "c", Some(&ctr)).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg
            .starts_with("vni: another VXLAN device already uses VNI 42 on port 4789"),
        "{}",
        e.msg
    );
    a.sb.ip(&["link", "del", "other42"]);
    // The right device, on someone else's bridge.
    vx(None, &with(&["id", "42"], v4, "4789"));
    a.sb.ip(&["link", "add", "brx", "type", "bridge"]);
    a.sb.ip(&["link", "set", "vxlan42", "master", "brx"]);
    let e = call(&a, Command::Add, &conf, "c", Some(&ctr)).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg
            .starts_with("bridge: existing vxlan42 is a port of another link"),
        "{}",
        e.msg
    );
    a.sb.ip(&["link", "set", "vxlan42", "nomaster"]);
    add(&a, &conf, "c", &ctr);
    del(&a, &conf, "c", Some(&ctr));
}

#[test]
fn concurrent_adds_on_a_new_network_all_succeed() {
    let (a, b) = pair("vx-conc");
    let ctrs: Vec<Sandbox> = (0..4)
        .map(|i| Sandbox::new(&format!("vx-conc-c{i}")))
        .collect();
    let conf = a.conf(
        77,
        json!({"peers": [b.v4(), "192.0.2.9"], "underlay": "ul0"}),
    );
    let results: Vec<_> = std::thread::scope(|s| {
        let jobs: Vec<_> = ctrs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (a, conf) = (&a, &conf);
                s.spawn(move || call(a, Command::Add, conf, &format!("c{i}"), Some(c)))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(a.flood("vxlan77"), vec![b.v4(), "192.0.2.9".to_string()]);
    let vx = a.sb.ip(&["-o", "link", "show", "type", "vxlan"]);
    assert_eq!(vx.lines().count(), 1, "{vx}");
    let first = results[0].as_ref().unwrap();
    assert!(pings(&ctrs[1], ip_of(first)), "same host, same bridge");
    for (i, c) in ctrs.iter().enumerate() {
        del(&a, &conf, &format!("c{i}"), Some(c));
    }
}

#[test]
fn del_is_idempotent_and_check_sees_a_broken_device() {
    let (a, b) = pair("vx-del");
    let ctr = Sandbox::new("vx-del-c");
    let conf = a.conf(5, json!({"peers": [b.v4()], "underlay": "ul0"}));
    let r = add(&a, &conf, "c", &ctr);
    let lease = || a.data.path().join("overlay").join(ip_of(&r).to_string());
    assert!(lease().exists());

    // CHECK notices a missing flood entry and a device off the bridge.
    a.sb.ip(&["link", "set", "vxlan5", "nomaster"]);
    let e = check(&a, &conf, &r, "c", &ctr).unwrap_err();
    assert!(
        e.msg.contains("bridge: vxlan5 is not a port of vxbr5"),
        "{}",
        e.msg
    );
    add(&a, &conf, "c2", &Sandbox::new("vx-del-c2"));
    check(&a, &conf, &r, "c", &ctr).unwrap();
    a.sb.exec(
        "bridge",
        &[
            "fdb",
            "del",
            "00:00:00:00:00:00",
            "dev",
            "vxlan5",
            "dst",
            &b.v4(),
        ],
    );
    let e = check(&a, &conf, &r, "c", &ctr).unwrap_err();
    assert!(
        e.msg
            .contains("peers: vxlan5 has no flood entry for 192.0.2.2"),
        "{}",
        e.msg
    );

    del(&a, &conf, "c", Some(&ctr));
    assert!(!ctr.has_link("eth0") && !lease().exists());
    del(&a, &conf, "c", Some(&ctr));
    del(&a, &conf, "c", None);
    ctr.delete();
    del(&a, &conf, "c", None);
    assert!(a.sb.has_link("vxlan5") && a.sb.has_link("vxbr5"));
    del(&a, &conf, "c2", None);
}

#[test]
fn status_needs_the_underlay_and_gc_releases_leases() {
    let (a, b) = pair("vx-st");
    let conf = a.conf(8, json!({"peers": [b.v4()], "underlay": "ul0"}));
    call(&a, Command::Status, &conf, "", None).unwrap();
    let gone = a.conf(8, json!({"peers": [b.v4()], "underlay": "nosuch0"}));
    let e = call(&a, Command::Status, &gone, "", None).unwrap_err();
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.starts_with("underlay: "), "{}", e.msg);
    let no_default = a.conf(8, json!({"peers": [b.v4()]}));
    let e = call(&a, Command::Status, &no_default, "", None).unwrap_err();
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("no default route"), "{}", e.msg);
    let e = call(&a, Command::Add, &gone, "x", Some(&Sandbox::new("vx-st-x"))).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.starts_with("underlay: "), "{}", e.msg);

    let (k, g) = (Sandbox::new("vx-st-k"), Sandbox::new("vx-st-g"));
    let rk = add(&a, &conf, "keep", &k);
    let rg = add(&a, &conf, "gone", &g);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    call(&a, Command::Gc, &gc, "", None).unwrap();
    let lease = |r| a.data.path().join("overlay").join(ip_of(r).to_string());
    assert!(lease(&rk).exists() && !lease(&rg).exists());
    del(&a, &conf, "keep", Some(&k));
    del(&a, &conf, "gone", Some(&g));
}
