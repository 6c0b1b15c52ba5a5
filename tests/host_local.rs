//! host-local as a real process, driven like a runtime drives it, inside a sandbox host.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use cni_shared::skel::Command;
use cni_shared::spec::Version;
use cni_tests::testkit::{Call, Sandbox, TempDir};
use serde_json::{json, Value};

fn conf(data: &TempDir, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data.path());
    json!({"cniVersion": "1.1.0", "name": "hlnet", "type": "bridge", "ipam": ipam})
}

fn v4(data: &TempDir) -> Value {
    conf(
        data,
        json!({"ranges": [[{"subnet": "10.10.0.0/24", "rangeStart": "10.10.0.10", "rangeEnd": "10.10.0.250"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}),
    )
}

fn add(host: &Sandbox, c: &Value, id: &str) -> Result<Value, cni_shared::CniError> {
    Call::new("host-local", Command::Add, c.clone())
        .container(id, "eth0", Some(host.path()))
        .run_in(host)
        .map(|o| o.json())
}

fn call(host: &Sandbox, cmd: Command, c: &Value, id: &str) -> Result<(), cni_shared::CniError> {
    Call::new("host-local", cmd, c.clone())
        .container(id, "eth0", Some(host.path()))
        .run_in(host)
        .map(|_| ())
}

fn leases(data: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.path().join("hlnet"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// This process's umask, which the plugins it runs inherit (read, not set: tests run in
/// parallel threads).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
        .unwrap()
}

#[test]
fn add_check_del_cycle_with_reference_layout() {
    let host = Sandbox::new("hl-cycle");
    let data = TempDir::new("hl-cycle");
    let c = v4(&data);
    let r = add(&host, &c, "ctr1").unwrap();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.10.0.10/24");
    assert_eq!(r["ips"][0]["gateway"], "10.10.0.1");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert!(
        r.get("interfaces").is_none(),
        "IPAM results carry no interfaces"
    );
    let lease = data.path().join("hlnet/10.10.0.10");
    assert_eq!(std::fs::read_to_string(&lease).unwrap(), "ctr1\r\neth0");
    // The reference's modes (less the umask, as there): files 0644, directories 0755; our
    // lock and index follow them.
    let (file, dir) = (0o644 & !umask(), 0o755 & !umask());
    for (p, want) in [
        ("hlnet/10.10.0.10", file),
        ("hlnet/last_reserved_ip.0", file),
        ("hlnet/lock", file),
        ("hlnet/.attachments/ctr1@eth0", file),
        ("hlnet/.attachments/.stamp", file),
        ("hlnet", dir),
        ("hlnet/.attachments", dir),
    ] {
        assert_eq!(mode(&data.path().join(p)), want, "{p}");
    }
    assert_eq!(
        std::fs::read_to_string(data.path().join("hlnet/last_reserved_ip.0")).unwrap(),
        "10.10.0.10"
    );

    let mut check = c.clone();
    check["prevResult"] = r.clone();
    call(&host, Command::Check, &check, "ctr1").unwrap();
    call(&host, Command::Del, &c, "ctr1").unwrap();
    assert!(leases(&data).is_empty());
    let e = call(&host, Command::Check, &check, "ctr1").unwrap_err();
    assert_eq!(
        e.code, 102,
        "CHECK fails once the reservation is gone: {}",
        e.msg
    );
    call(&host, Command::Del, &c, "ctr1").unwrap();
    // DEL without CNI_NETNS is fine too.
    Call::new("host-local", Command::Del, c.clone())
        .container("ctr1", "eth0", None)
        .run_in(&host)
        .unwrap();
}

#[test]
fn every_result_version() {
    let host = Sandbox::new("hl-vers");
    let data = TempDir::new("hl-vers");
    for (i, v) in Version::ALL.iter().enumerate() {
        let mut c = v4(&data);
        c["cniVersion"] = json!(v.as_str());
        let id = format!("v{i}");
        let r = add(&host, &c, &id).unwrap();
        assert_eq!(r["cniVersion"], v.as_str());
        match v.as_str() {
            "0.1.0" | "0.2.0" => assert!(r["ip4"]["ip"].is_string(), "{r}"),
            "0.3.0" | "0.3.1" | "0.4.0" => assert_eq!(r["ips"][0]["version"], "4"),
            _ => assert!(r["ips"][0].get("version").is_none()),
        }
        call(&host, Command::Del, &c, &id).unwrap();
    }
    assert!(leases(&data).is_empty());
}

#[test]
fn fifty_parallel_adds_get_distinct_addresses() {
    let host = Sandbox::new("hl-par");
    let data = TempDir::new("hl-par");
    let c = v4(&data);
    let addrs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (host, c) = (&host, &c);
                s.spawn(move || {
                    add(host, c, &format!("par{i}")).unwrap()["ips"][0]["address"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<&String> = addrs.iter().collect();
    assert_eq!(unique.len(), 50, "duplicate addresses: {addrs:?}");
    assert_eq!(leases(&data).len(), 50);
    std::thread::scope(|s| {
        for i in 0..50 {
            let (host, c) = (&host, &c);
            s.spawn(move || call(host, Command::Del, c, &format!("par{i}")).unwrap());
        }
    });
    assert!(leases(&data).is_empty());
}

#[test]
fn dual_stack_failure_releases_the_ipv4_lease() {
    let host = Sandbox::new("hl-ds");
    let data = TempDir::new("hl-ds");
    let c = conf(
        &data,
        json!({"ranges": [
            [{"subnet": "10.20.0.0/24"}],
            [{"subnet": "fd20::/64", "rangeStart": "fd20::10", "rangeEnd": "fd20::10"}]
        ]}),
    );
    let r = add(&host, &c, "ds1").unwrap();
    let got: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["10.20.0.2/24", "fd20::10/64"]);
    let e = add(&host, &c, "ds2").unwrap_err();
    assert_eq!(e.code, 100);
    assert!(e.msg.contains("fd20::/64"), "{}", e.msg);
    assert_eq!(
        leases(&data),
        ["10.20.0.2", "fd20::10"],
        "ds2's IPv4 lease was rolled back"
    );
}

#[test]
fn requested_addresses_by_every_channel() {
    let host = Sandbox::new("hl-req");
    let data = TempDir::new("hl-req");
    let c = v4(&data);
    let r = Call::new("host-local", Command::Add, c.clone())
        .container("a1", "eth0", Some(host.path()))
        .args("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.10.0.77")
        .run_in(&host)
        .unwrap()
        .json();
    assert_eq!(r["ips"][0]["address"], "10.10.0.77/24");
    let mut rc = c.clone();
    rc["runtimeConfig"] = json!({"ips": ["10.10.0.78/24"]});
    assert_eq!(
        add(&host, &rc, "a2").unwrap()["ips"][0]["address"],
        "10.10.0.78/24"
    );
    let mut ac = c.clone();
    ac["args"] = json!({"cni": {"ips": ["10.10.0.79"]}});
    assert_eq!(
        add(&host, &ac, "a3").unwrap()["ips"][0]["address"],
        "10.10.0.79/24"
    );
    // Taken: the error names the address and its holder.
    let e = Call::new("host-local", Command::Add, c.clone())
        .container("a4", "eth0", Some(host.path()))
        .args("IP=10.10.0.77")
        .run_in(&host)
        .unwrap_err();
    assert_eq!(e.code, 101);
    assert!(
        e.msg.contains("10.10.0.77") && e.msg.contains("a1"),
        "{}",
        e.msg
    );
    // Unknown CNI_ARGS keys need IgnoreUnknown, also next to runtimeConfig.ips (CNI_ARGS is
    // always read, as by the reference).
    for conf in [&c, &rc] {
        let e = Call::new("host-local", Command::Add, conf.clone())
            .container("a5", "eth0", Some(host.path()))
            .args("FOO=1")
            .run_in(&host)
            .unwrap_err();
        assert_eq!(e.code, 4, "{}", e.msg);
    }
    assert_eq!(
        leases(&data),
        ["10.10.0.77", "10.10.0.78", "10.10.0.79"],
        "the refused ADDs took nothing"
    );
}

/// The reference takes the union of CNI_ARGS `IP`, `args.cni.ips` and `runtimeConfig.ips`:
/// every address is honoured in its range set, an address given twice counts once, and an
/// address no set can take fails the ADD with nothing leased.
#[test]
fn requested_addresses_are_the_union_of_every_source() {
    let host = Sandbox::new("hl-union");
    let data = TempDir::new("hl-union");
    let c = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.12.0.0/24"}], [{"subnet": "fd12::/64"}],
                          [{"subnet": "10.13.0.0/24"}]]}),
    );
    let add_with = |id: &str, args: &str, cni: Value, rt: Value| {
        let mut conf = c.clone();
        conf["args"] = json!({"cni": {"ips": cni}});
        conf["runtimeConfig"] = json!({"ips": rt});
        Call::new("host-local", Command::Add, conf)
            .container(id, "eth0", Some(host.path()))
            .args(args)
            .run_in(&host)
            .map(|o| o.json())
    };
    let addresses = |r: &Value| -> Vec<String> {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect()
    };
    // One source per range set: all three honoured.
    let r = add_with(
        "u1",
        "IP=10.12.0.50",
        json!(["fd12::50"]),
        json!(["10.13.0.50/24"]),
    )
    .unwrap();
    assert_eq!(
        addresses(&r),
        ["10.12.0.50/24", "fd12::50/64", "10.13.0.50/24"]
    );
    // The same address from every source counts once; the other sets allocate.
    let r = add_with(
        "u2",
        "IgnoreUnknown=1;IP=fd12::51",
        json!(["fd12::51"]),
        json!(["fd12::51/64"]),
    )
    .unwrap();
    assert_eq!(
        addresses(&r),
        ["10.12.0.51/24", "fd12::51/64", "10.13.0.51/24"]
    );
    let before = leases(&data);
    // Two different addresses for one range set: one would go unused, which the reference
    // refuses too; nothing is leased.
    let e = add_with("u3", "IP=10.12.0.60", json!([]), json!(["10.12.0.61"])).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.contains("10.12.0.61"), "{}", e.msg);
    // An address in no range set: refused naming it, nothing leased.
    let e = add_with("u4", "", json!(["10.99.0.1"]), json!(["fd12::70"])).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.contains("10.99.0.1"), "{}", e.msg);
    // One of the union is taken: code 101 naming its holder, and the others are not kept.
    let e = add_with("u5", "IP=10.12.0.70", json!(["fd12::50"]), json!([])).unwrap_err();
    assert_eq!(e.code, 101, "{}", e.msg);
    assert!(
        e.msg.contains("fd12::50") && e.msg.contains("u1"),
        "{}",
        e.msg
    );
    assert_eq!(leases(&data), before, "the refused ADDs took nothing");
}

#[test]
fn ip_ranges_capability_legacy_subnet_exclude_and_resolv_conf() {
    let host = Sandbox::new("hl-keys");
    let data = TempDir::new("hl-keys");
    let resolv = data.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "domain corp.example\nnameserver 10.30.0.53\nsearch svc.local\noptions ndots:3 timeout:1\n",
    )
    .unwrap();
    let mut c = conf(
        &data,
        json!({"subnet": "10.30.0.0/24", "gateway": "10.30.0.254",
                                   "exclude": ["10.30.0.1", "10.30.0.2/31"], "resolvConf": resolv}),
    );
    let r = add(&host, &c, "k1").unwrap();
    assert_eq!(r["ips"][0]["address"], "10.30.0.4/24");
    assert_eq!(r["ips"][0]["gateway"], "10.30.0.254");
    assert_eq!(r["dns"]["nameservers"][0], "10.30.0.53");
    assert_eq!(r["dns"]["search"][0], "svc.local");
    assert_eq!(r["dns"]["domain"], "corp.example");
    assert_eq!(r["dns"]["options"], json!(["ndots:3", "timeout:1"]));
    // The capability's range sets go in front of the configured ones (the reference's order),
    // so the attachment gets an address from each; the set indexes (and so the
    // last_reserved_ip files) are counted in that order.
    c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.31.0.0/24"}]]});
    let r = add(&host, &c, "k2").unwrap();
    let got: Vec<&Value> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["address"])
        .collect();
    assert_eq!(got, [&json!("10.31.0.2/24"), &json!("10.30.0.5/24")], "{r}");
    assert_eq!(r["ips"][1]["gateway"], "10.30.0.254");
    let last =
        |n: u32| std::fs::read_to_string(data.path().join(format!("hlnet/last_reserved_ip.{n}")));
    assert_eq!(last(0).unwrap(), "10.31.0.2");
    assert_eq!(last(1).unwrap(), "10.30.0.5");
    // An ipRanges set overlapping a configured one is refused naming both.
    c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.30.0.128/25"}]]});
    let e = add(&host, &c, "k3").unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg.contains("runtimeConfig.ipRanges[0]") && e.msg.starts_with("ipam: overlaps"),
        "{}",
        e.msg
    );
    c.as_object_mut().unwrap().remove("runtimeConfig");
    call(&host, Command::Del, &c, "k2").unwrap();
    call(&host, Command::Del, &c, "k1").unwrap();
    assert!(leases(&data).is_empty(), "{:?}", leases(&data));
}

/// A range's gateway outside its subnet is accepted, as by the reference: it is returned as the
/// result's gateway and never compared with the range's addresses (a warning names it).
#[test]
fn a_gateway_outside_the_subnet_is_accepted() {
    let host = Sandbox::new("hl-gwout");
    let data = TempDir::new("hl-gwout");
    let log = data.path().join("log");
    let c = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.36.0.0/30", "gateway": "192.0.2.1"}]]}),
    );
    let run = |id: &str| {
        Call::new("host-local", Command::Add, c.clone())
            .container(id, "eth0", Some(host.path()))
            .env("CNI_LOG_FILE", log.to_str().unwrap())
            .run_in(&host)
            .map(|o| o.json())
    };
    // A /30 without a gateway inside: both host addresses, .1 first.
    let r = run("gw1").unwrap();
    assert_eq!(r["ips"][0]["address"], "10.36.0.1/30");
    assert_eq!(r["ips"][0]["gateway"], "192.0.2.1");
    assert_eq!(run("gw2").unwrap()["ips"][0]["address"], "10.36.0.2/30");
    assert_eq!(run("gw3").unwrap_err().code, 100);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ipam.ranges[0][0].gateway")
            && logged.contains("192.0.2.1")
            && logged.contains("10.36.0.0/30"),
        "{logged}"
    );
    // A gateway of the other family is still refused, naming the key.
    let mut c6 = c.clone();
    c6["ipam"]["ranges"][0][0]["gateway"] = json!("fd00::1");
    let e = add(&host, &c6, "gw4").unwrap_err();
    assert_eq!(e.code, 7);
    assert!(
        e.msg.starts_with("ipam.ranges[0][0].gateway: fd00::1"),
        "{}",
        e.msg
    );
}

/// Where a range starts and ends: legacy top-level keys, the gateway and the broadcast address
/// never handed out, a full range is code 100, and overlapping range sets are refused.
#[test]
fn range_bounds_gateway_broadcast_and_overlaps() {
    let host = Sandbox::new("hl-bounds");
    let data = TempDir::new("hl-bounds");
    // Legacy keys: exactly .100 and .101.
    let legacy = conf(
        &data,
        json!({"subnet": "10.32.0.0/24", "rangeStart": "10.32.0.100", "rangeEnd": "10.32.0.101"}),
    );
    let got: Vec<Value> = ["l1", "l2"]
        .iter()
        .map(|id| add(&host, &legacy, id).unwrap()["ips"][0]["address"].clone())
        .collect();
    assert_eq!(got, [json!("10.32.0.100/24"), json!("10.32.0.101/24")]);
    let e = add(&host, &legacy, "l3").unwrap_err();
    assert_eq!(e.code, 100, "{}", e.msg);
    // A /30 by default: .1 is the gateway, .3 the broadcast; only .2 is handed out.
    let mut small = conf(&data, json!({"ranges": [[{"subnet": "10.33.0.0/30"}]]}));
    small["name"] = json!("hlsmall");
    let r = add(&host, &small, "s1").unwrap();
    assert_eq!(r["ips"][0]["address"], "10.33.0.2/30");
    assert_eq!(r["ips"][0]["gateway"], "10.33.0.1");
    assert_eq!(add(&host, &small, "s2").unwrap_err().code, 100);
    // A range holding only its gateway has nothing to give.
    let mut only_gw = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.34.0.0/24", "rangeStart": "10.34.0.1",
                            "rangeEnd": "10.34.0.1", "gateway": "10.34.0.1"}]]}),
    );
    only_gw["name"] = json!("hlgw");
    assert_eq!(add(&host, &only_gw, "g1").unwrap_err().code, 100);
    // Two range sets that overlap: code 7 naming the set, and no lease written.
    let mut overlap = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.35.0.0/24"}], [{"subnet": "10.35.0.128/25"}]]}),
    );
    overlap["name"] = json!("hlover");
    let e = add(&host, &overlap, "o1").unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(
        e.msg.contains("ipam.ranges[1]") && e.msg.contains("overlaps range set 0"),
        "{}",
        e.msg
    );
    assert!(!data.path().join("hlover").join("10.35.0.2").exists());
}

#[test]
fn gc_and_status() {
    let host = Sandbox::new("hl-gc");
    let data = TempDir::new("hl-gc");
    let c = v4(&data);
    for id in ["g1", "g2", "g3"] {
        add(&host, &c, id).unwrap();
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g2", "ifname": "eth0"}]);
    Call::new("host-local", Command::Gc, gc)
        .run_in(&host)
        .unwrap();
    assert_eq!(leases(&data), ["10.10.0.11"]);
    // The older spelling is honoured too.
    let mut gc_old = c.clone();
    gc_old["cni.dev/attachments"] = json!([]);
    Call::new("host-local", Command::Gc, gc_old)
        .run_in(&host)
        .unwrap();
    assert!(leases(&data).is_empty());

    // STATUS probes without touching the network directory: its mtime is what tells ADD and
    // GC that the index is theirs (a change makes the next call rebuild it from every lease).
    add(&host, &c, "g4").unwrap();
    let mtime = || {
        std::fs::metadata(data.path().join("hlnet"))
            .and_then(|m| m.modified())
            .unwrap()
    };
    let before = mtime();
    Call::new("host-local", Command::Status, c.clone())
        .run_in(&host)
        .unwrap();
    assert_eq!(mtime(), before, "STATUS changed the network directory");
    assert!(
        std::fs::read_dir(data.path().join("hlnet/.attachments"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains("status")),
        "the probe is removed"
    );
    let full = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.40.0.0/24", "rangeStart": "10.40.0.9", "rangeEnd": "10.40.0.9"}]]}),
    );
    add(&host, &full, "f1").unwrap();
    // A full range set does not fail STATUS (runtimes would mark the node NotReady and evict
    // the very pods holding the addresses); it is logged, and ADD says so with code 100.
    let log = data.path().join("status.log");
    Call::new("host-local", Command::Status, full.clone())
        .env("CNI_LOG_FILE", log.to_str().unwrap())
        .run_in(&host)
        .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("WARN")
            && logged.contains("range set 0 of network hlnet has no free address")
            && logged.contains("10.40.0.0/24"),
        "{logged}"
    );
    assert_eq!(add(&host, &full, "f2").unwrap_err().code, 100);
    // A data dir under a regular file can never be created.
    let blocker = data.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let mut ro = conf(&data, json!({"subnet": "10.50.0.0/24"}));
    ro["ipam"]["dataDir"] = json!(blocker.join("sub"));
    assert_eq!(
        Call::new("host-local", Command::Status, ro)
            .run_in(&host)
            .unwrap_err()
            .code,
        50
    );
}

#[test]
fn bad_input_gets_the_right_code_and_changes_nothing() {
    let host = Sandbox::new("hl-bad");
    let data = TempDir::new("hl-bad");
    let good = v4(&data);
    let run_raw = |stdin: &[u8]| {
        Call::new("host-local", Command::Add, json!({}))
            .container("b1", "eth0", Some(host.path()))
            .run_raw_in(&host, stdin)
            .unwrap_err()
            .code
    };
    assert_eq!(run_raw(b"{\"cniVersion\": "), 6);
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("type");
    assert_eq!(add(&host, &c, "b1").unwrap_err().code, 7);
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("name");
    assert_eq!(add(&host, &c, "b1").unwrap_err().code, 7);
    for bad_name in ["a/b", "..", "../../etc"] {
        let mut c = good.clone();
        c["name"] = json!(bad_name);
        assert_eq!(add(&host, &c, "b1").unwrap_err().code, 7, "{bad_name}");
    }
    let mut c = good.clone();
    c["cniVersion"] = json!("0.9.9");
    assert_eq!(add(&host, &c, "b1").unwrap_err().code, 1);
    let mut c = good.clone();
    c["cniVersion"] = json!("0.3.1");
    assert_eq!(call(&host, Command::Check, &c, "b1").unwrap_err().code, 1);
    let mut c = good.clone();
    c["cniVersion"] = json!("1.0.0");
    assert_eq!(
        Call::new("host-local", Command::Gc, c.clone())
            .run_in(&host)
            .unwrap_err()
            .code,
        1
    );
    assert_eq!(
        Call::new("host-local", Command::Status, c)
            .run_in(&host)
            .unwrap_err()
            .code,
        1
    );
    let mut c = good.clone();
    c["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.99.0.1");
    let e = add(&host, &c, "b1").unwrap_err();
    assert_eq!(e.code, 7);
    assert!(
        e.msg.contains("rangeStart") && e.msg.contains("10.99.0.1"),
        "{}",
        e.msg
    );
    for path in ["relative/dir", "/var/lib/../../etc"] {
        let mut c = good.clone();
        c["ipam"]["dataDir"] = json!(path);
        assert_eq!(add(&host, &c, "b1").unwrap_err().code, 7, "{path}");
    }
    let env_cases = [
        ("CNI_COMMAND", "NOPE"),
        ("CNI_IFNAME", "bad/if"),
        ("CNI_CONTAINERID", "../x"),
    ];
    for (k, v) in env_cases {
        let call = Call::new("host-local", Command::Add, good.clone())
            .container("b1", "eth0", Some(host.path()))
            .env(k, v);
        assert_eq!(call.run_in(&host).unwrap_err().code, 4, "{k}={v}");
    }
    let e = Call::new("host-local", Command::Add, good.clone())
        .container("b1", "eth0", None)
        .run_in(&host)
        .unwrap_err();
    assert_eq!(e.code, 4, "ADD without CNI_NETNS");
    assert!(
        leases(&data).is_empty(),
        "nothing was allocated by bad input"
    );
    // Second ADD of one attachment is refused.
    add(&host, &good, "dup").unwrap();
    assert_eq!(add(&host, &good, "dup").unwrap_err().code, 101);
}
