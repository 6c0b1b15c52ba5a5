//! ipMasq with both backends (rules and real traffic through an "ext" namespace) and
//! macspoofchk.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{Call, Sandbox, TempDir};
use serde_json::json;

use super::{add, blocked, call, call_if, conf, del, ip_of, ipt_nat, nft_ruleset, pings};

/// The source address a UDP datagram from `from` to `to` arrives with in `at` (`None`: nothing
/// arrived within a few tries).
fn source_seen(from: &Sandbox, at: &Sandbox, to: IpAddr) -> Option<IpAddr> {
    let listen = SocketAddr::new(to, 9999);
    let server = at.netns().run(|| UdpSocket::bind(listen)).ok()?.ok()?;
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let unspecified: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    for _ in 0..10 {
        let _ = from
            .netns()
            .run(|| UdpSocket::bind(unspecified).and_then(|c| c.send_to(b"who", listen)));
        let mut buf = [0u8; 8];
        if let Ok((_, src)) = server.recv_from(&mut buf) {
            return Some(src.ip());
        }
    }
    None
}

/// Host sandbox with an "ext" namespace behind a veth (192.0.2.0/24, 2001:db8:70::/64).
fn host_with_ext(label: &str) -> (Sandbox, Sandbox) {
    let host = Sandbox::new(label);
    let ext = Sandbox::new(&format!("{label}-x"));
    host.link_to("to-ext", &ext, "eth0");
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "to-ext"]);
    host.ip(&["addr", "add", "2001:db8:70::1/64", "dev", "to-ext", "nodad"]);
    ext.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    ext.ip(&["addr", "add", "2001:db8:70::2/64", "dev", "eth0", "nodad"]);
    (host, ext)
}

fn masquerade_with(backend: &str) {
    let (host, ext) = host_with_ext(&format!("br-mq-{}", &backend[..3]));
    let (c1, c2) = (Sandbox::new("br-mq-c1"), Sandbox::new("br-mq-c2"));
    let data = TempDir::new("br-mq");
    let c = conf(
        &data,
        "br-mq",
        &["10.70.0.0/24", "fd70::/64"],
        json!({"ipMasq": true, "ipMasqBackend": backend, "isDefaultGateway": true}),
    );
    let r1 = add(&host, &c, "m1", &c1);
    let r2 = add(&host, &c, "m2", &c2);
    let rules = || match backend {
        "nftables" => nft_ruleset(&host),
        _ => ipt_nat(&host, false) + &ipt_nat(&host, true),
    };
    let now = rules();
    assert!(now.matches("cni:brnet/m1/eth0").count() >= 2, "{now}");
    assert!(now.contains("cni:brnet/m2/eth0"), "{now}");

    let ext4: IpAddr = "192.0.2.2".parse().unwrap();
    let ext6: IpAddr = "2001:db8:70::2".parse().unwrap();
    assert_eq!(
        source_seen(&c1, &ext, ext4),
        Some("192.0.2.1".parse().unwrap())
    );
    assert_eq!(
        source_seen(&c1, &ext, ext6),
        Some("2001:db8:70::1".parse().unwrap())
    );
    assert_eq!(
        source_seen(&c1, &c2, ip_of(&r2, 0)),
        Some(ip_of(&r1, 0)),
        "traffic to the own subnet is not masqueraded"
    );
    let mut check = c.clone();
    check["prevResult"] = r1.clone();
    call(&host, Command::Check, &check, "m1", Some(&c1)).unwrap();

    // DEL with an empty CNI_NETNS still removes the rules (the reference's issue #810).
    call_if(&host, Command::Del, &c, "m1", "eth0", None).unwrap();
    let now = rules();
    assert!(!now.contains("cni:brnet/m1/eth0"), "{now}");
    assert!(now.contains("cni:brnet/m2/eth0"), "{now}");
    assert!(call(&host, Command::Check, &check, "m1", Some(&c1)).is_err());
    del(&host, &c, "m1", Some(&c1));
    assert!(!c1.has_link("eth0"));

    // DEL after the namespace is gone: rules gone too.
    let path = c2.path().to_path_buf();
    c2.delete();
    call_if(&host, Command::Del, &c, "m2", "eth0", Some(&path)).unwrap();
    let now = rules();
    assert!(!now.contains("cni:brnet/"), "{now}");
    assert!(!now.contains(":CNI-M-"), "the chains went too: {now}");
    call_if(&host, Command::Del, &c, "m2", "eth0", Some(&path)).unwrap();
    assert!(super::leases(&data).is_empty());
}

#[test]
fn masquerade_nftables() {
    masquerade_with("nftables");
}

#[test]
fn masquerade_iptables() {
    masquerade_with("iptables");
}

#[test]
fn iptables_coexists_with_foreign_chains() {
    let host = Sandbox::new("br-ipt-co");
    let ctr = Sandbox::new("br-ipt-co-c");
    let data = TempDir::new("br-ipt-co");
    host.exec("iptables", &["-t", "nat", "-N", "KUBE-POSTROUTING"]);
    host.exec(
        "iptables",
        &["-t", "nat", "-A", "KUBE-POSTROUTING", "-j", "RETURN"],
    );
    host.exec(
        "iptables",
        &["-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"],
    );
    let c = conf(
        &data,
        "br-ipt-co",
        &["10.71.0.0/24"],
        json!({"ipMasq": true, "ipMasqBackend": "iptables"}),
    );
    add(&host, &c, "k", &ctr);
    add(&host, &c, "k2", &Sandbox::new("br-ipt-co-c2"));
    add(&host, &c, "k3", &Sandbox::new("br-ipt-co-c3"));
    let save = ipt_nat(&host, false);
    assert!(save.contains("-A KUBE-POSTROUTING -j RETURN"), "{save}");
    assert_eq!(
        save.matches("-j CNI-MASQ").count(),
        1,
        "one jump to CNI-MASQ: {save}"
    );
    // GC removes the rules and the chain of an attachment that is not valid any more.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "k", "ifname": "eth0"},
                                            {"containerID": "k2", "ifname": "eth0"}]);
    call(&host, Command::Gc, &gc, "", None).unwrap();
    let save = ipt_nat(&host, false);
    assert!(!save.contains("cni:brnet/k3/eth0"), "{save}");
    assert_eq!(save.matches(":CNI-M-").count(), 2, "{save}");
    del(&host, &c, "k", Some(&ctr));
    let save = ipt_nat(&host, false);
    assert!(save.contains("-A KUBE-POSTROUTING -j RETURN"), "{save}");
    assert!(
        !save.contains("cni:brnet/k/eth0") && save.contains("cni:brnet/k2/eth0"),
        "{save}"
    );
}

#[test]
fn macspoofchk_drops_frames_from_another_mac() {
    let host = Sandbox::new("br-spoof");
    let ctr = Sandbox::new("br-spoof-c");
    let data = TempDir::new("br-spoof");
    let c = conf(
        &data,
        "br-spoof",
        &["10.72.0.0/24"],
        json!({"macspoofchk": true}),
    );
    let r = add(&host, &c, "s", &ctr);
    let rules = nft_ruleset(&host);
    assert!(rules.contains("table bridge cni_macspoof"), "{rules}");
    assert_eq!(rules.matches("cni:brnet/s/eth0").count(), 2, "{rules}");
    let gw: IpAddr = "10.72.0.1".parse().unwrap();
    assert!(pings(&ctr, gw));
    let mut check = c.clone();
    check["prevResult"] = r.clone();
    call(&host, Command::Check, &check, "s", Some(&ctr)).unwrap();
    let mac = r["interfaces"][2]["mac"].as_str().unwrap().to_string();
    ctr.ip(&["link", "set", "eth0", "address", "0a:58:0a:48:00:ee"]);
    assert!(blocked(&ctr, gw), "a spoofed source MAC is dropped");
    ctr.ip(&["link", "set", "eth0", "address", &mac]);
    assert!(pings(&ctr, gw));
    del(&host, &c, "s", Some(&ctr));
    assert!(!nft_ruleset(&host).contains("cni:brnet/s/"));
    // And through an empty CNI_NETNS, found by its tag — with no nft engine (`CNI_NFT=none`):
    // only the table's creation needs one.
    add(&host, &c, "s2", &ctr);
    let without_nft = |cmd: Command, c: &serde_json::Value, id: &str| {
        Call::new("bridge", cmd, c.clone())
            .container(id, "eth0", None)
            .env("CNI_NFT", "none")
            .run_in(&host)
    };
    without_nft(Command::Del, &c, "s2").unwrap();
    assert!(!nft_ruleset(&host).contains("cni:brnet/s2/"));
    del(&host, &c, "s2", Some(&ctr));
    // GC keeps the valid attachment's entries and removes the others.
    let ctr2 = Sandbox::new("br-spoof-c2");
    add(&host, &c, "s3", &ctr);
    add(&host, &c, "s4", &ctr2);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "s4", "ifname": "eth0"}]);
    without_nft(Command::Gc, &gc, "").unwrap();
    let rules = nft_ruleset(&host);
    assert_eq!(rules.matches("cni:brnet/s3/").count(), 0, "{rules}");
    assert_eq!(rules.matches("cni:brnet/s4/").count(), 2, "{rules}");
    del(&host, &c, "s4", Some(&ctr2));
    assert!(!nft_ruleset(&host).contains("cni:brnet/"));
    del(&host, &c, "s3", Some(&ctr));
}

#[test]
fn the_nft_binary_path_finds_rules_by_tag_too() {
    let host = Sandbox::new("br-nftbin");
    let ctr = Sandbox::new("br-nftbin-c");
    let data = TempDir::new("br-nftbin");
    let c = conf(
        &data,
        "br-nftbin",
        &["10.73.0.0/24"],
        json!({"ipMasq": true, "macspoofchk": true}),
    );
    let run = |cmd, netns: Option<&std::path::Path>| {
        Call::new("bridge", cmd, c.clone())
            .container("nb", "eth0", netns)
            .env("CNI_NFT", "binary")
            .run_in(&host)
    };
    let r = run(Command::Add, Some(ctr.path())).unwrap().json();
    assert_eq!(nft_ruleset(&host).matches("cni:brnet/nb/eth0").count(), 3);
    let mut check = c.clone();
    check["prevResult"] = r;
    Call::new("bridge", Command::Check, check)
        .container("nb", "eth0", Some(ctr.path()))
        .env("CNI_NFT", "binary")
        .run_in(&host)
        .unwrap();
    // No namespace, no prevResult: found by listing the maps and sets (JSON).
    run(Command::Del, None).unwrap();
    assert!(!nft_ruleset(&host).contains("cni:brnet/nb/"));
    run(Command::Del, Some(ctr.path())).unwrap();
}

/// Run the bridge plugin in `host` with /usr/sbin (and /sbin) hidden behind an empty tmpfs in a
/// private mount namespace, so neither nft nor iptables can be found.
fn without_sbin(
    host: &Sandbox,
    cmd: Command,
    c: &serde_json::Value,
    netns: &std::path::Path,
    env: &[(&str, &str)],
) -> CniError {
    let script = "mount -t tmpfs none /usr/sbin && { mount -t tmpfs none /sbin 2>/dev/null; \
                  true; } && exec \"$0\"";
    let mut p = host.command("unshare");
    p.args(["-m", "sh", "-c", script])
        .arg(cni_tests::testkit::plugin_path("bridge"))
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_PATH", cni_tests::testkit::bin_dir())
        .env("CNI_CONTAINERID", "nosbin")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", netns);
    for (k, v) in env {
        p.env(k, v);
    }
    let stdin = serde_json::to_vec(c).unwrap();
    cni_shared::invoke::communicate(p, &stdin).unwrap_err()
}

#[test]
fn an_unusable_backend_is_status_50_naming_it() {
    let host = Sandbox::new("br-nosbin");
    let ctr = Sandbox::new("br-nosbin-c");
    let data = TempDir::new("br-nosbin");
    let ipt = conf(
        &data,
        "br-nosbin",
        &["10.74.0.0/24"],
        json!({"ipMasq": true, "ipMasqBackend": "iptables"}),
    );
    let e = without_sbin(&host, Command::Status, &ipt, host.path(), &[]);
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("iptables"), "{}", e.msg);
    let mut nft = ipt.clone();
    nft["ipMasqBackend"] = json!("nftables");
    let binary = [("CNI_NFT", "binary")];
    let e = without_sbin(&host, Command::Status, &nft, host.path(), &binary);
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("nftables"), "{}", e.msg);
    // ADD says so too, and rolls back what it did before the firewall step.
    let e = without_sbin(&host, Command::Add, &ipt, ctr.path(), &[]);
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("ipMasqBackend iptables"), "{}", e.msg);
    assert!(!ctr.has_link("eth0"), "veth rolled back");
    assert!(super::host_veths(&host).is_empty(), "veth rolled back");
    assert!(super::leases(&data).is_empty(), "IPAM rolled back");
}

/// `Ipt::restore` applies a transaction (the rules are listed when it returns) and reports a
/// refused one with the tool's error, leaving nothing behind.
#[test]
fn iptables_restore_reports_commits_and_failures() {
    use cni_shared::firewall::ipt::{del_input, Ipt};
    let host = Sandbox::new("ipt-restore");
    let (ok, listed, bad, after_bad, deleted, listed_after) = host
        .netns()
        .run(|| {
            let ipt = Ipt::new(false).unwrap();
            let ok = ipt.restore(
                "*nat\n:CNI-RESTORE-TEST - [0:0]\n-A CNI-RESTORE-TEST -s 10.9.9.9/32 -j RETURN\nCOMMIT\n",
            );
            let listed = ipt.list_chain("nat", "CNI-RESTORE-TEST").unwrap();
            let bad = ipt.restore("*nat\n-A CNI-NO-SUCH-CHAIN -j RETURN\nCOMMIT\n");
            let after_bad = ipt.list_chain("nat", "CNI-NO-SUCH-CHAIN").unwrap();
            let deleted = ipt.restore(&del_input(&[], &["CNI-RESTORE-TEST".to_string()]));
            let listed_after = ipt.list_chain("nat", "CNI-RESTORE-TEST").unwrap();
            (ok, listed, bad, after_bad, deleted, listed_after)
        })
        .unwrap();
    assert_eq!(ok, Ok(()));
    assert_eq!(
        listed,
        Some(vec![
            "-A CNI-RESTORE-TEST -s 10.9.9.9/32 -j RETURN".to_string()
        ])
    );
    let err = bad.expect_err("a rule in a missing chain is refused");
    assert!(!err.is_empty(), "the tool's error text");
    assert_eq!(after_bad, None);
    assert_eq!(deleted, Ok(()));
    assert_eq!(listed_after, None);
}

/// Without `ipMasqBackend`, on a host where nftables cannot be used (`CNI_NFT=none` stands for
/// "no libnftables, no nft"), ipMasq works through iptables, as the reference's default does;
/// where it can, nftables. Here the node gets nftables after two ADDs: CHECK, DEL and GC find
/// the entries whichever backend made them.
#[test]
fn without_a_backend_key_iptables_where_nftables_is_missing() {
    let (host, ext) = host_with_ext("br-auto");
    let (c1, c2) = (Sandbox::new("br-auto-c1"), Sandbox::new("br-auto-c2"));
    let data = TempDir::new("br-auto");
    let c = conf(
        &data,
        "br-auto",
        &["10.71.0.0/24"],
        json!({"ipMasq": true, "isDefaultGateway": true}),
    );
    let run = |cmd: Command, conf: &serde_json::Value, id: &str, ctr: &Sandbox, nft: bool| {
        let mut call =
            Call::new("bridge", cmd, conf.clone()).container(id, "eth0", Some(ctr.path()));
        if !nft {
            call = call.env("CNI_NFT", "none");
        }
        call.run_in(&host).map(|o| {
            if o.stdout.is_empty() {
                serde_json::Value::Null
            } else {
                o.json()
            }
        })
    };
    let r1 = run(Command::Add, &c, "a1", &c1, false).unwrap();
    let ipt = || ipt_nat(&host, false);
    assert!(ipt().contains("cni:brnet/a1/eth0"), "{}", ipt());
    assert!(
        !nft_ruleset(&host).contains("cni_masq"),
        "{}",
        nft_ruleset(&host)
    );
    let ext4: IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(
        source_seen(&c1, &ext, ext4),
        Some("192.0.2.1".parse().unwrap())
    );
    let mut check = c.clone();
    check["prevResult"] = r1.clone();
    run(Command::Check, &check, "a1", &c1, false).unwrap();
    Call::new("bridge", Command::Status, c.clone())
        .env("CNI_NFT", "none")
        .run_in(&host)
        .expect("STATUS: iptables is usable");

    let c3 = Sandbox::new("br-auto-c3");
    run(Command::Add, &c, "a3", &c3, false).unwrap();
    assert!(ipt().contains("cni:brnet/a3/eth0"), "{}", ipt());

    // nftables usable now: the next ADD uses it (and so would every later one, also without
    // the engine: the table exists); CHECK and DEL of the first still find theirs.
    let r2 = run(Command::Add, &c, "a2", &c2, true).unwrap();
    assert!(nft_ruleset(&host).contains("cni:brnet/a2/eth0"));
    assert!(!ipt().contains("cni:brnet/a2/eth0"), "{}", ipt());
    assert_eq!(
        source_seen(&c2, &ext, ext4),
        Some("192.0.2.1".parse().unwrap())
    );
    run(Command::Check, &check, "a1", &c1, true).unwrap();
    run(Command::Del, &c, "a1", &c1, true).unwrap();
    assert!(!ipt().contains("cni:brnet/a1/"), "{}", ipt());
    assert_eq!(
        ipt().matches(":CNI-M-").count(),
        1,
        "a1's chain goes too, a3's stays: {}",
        ipt()
    );
    // GC with nothing valid: a2's nftables entry and a3's iptables chain both go.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::new("bridge", Command::Gc, gc).run_in(&host).unwrap();
    assert!(
        !nft_ruleset(&host).contains("cni:brnet/a2/"),
        "{}",
        nft_ruleset(&host)
    );
    assert!(!ipt().contains("cni:brnet/a3/"), "{}", ipt());
    assert!(!ipt().contains(":CNI-M-"), "{}", ipt());
    for (id, ctr) in [("a2", &c2), ("a3", &c3)] {
        run(Command::Del, &c, id, ctr, true).unwrap();
    }
    assert!(ip_of(&r2, 0).is_ipv4());
}

/// The legacy tables' chain names, read from the kernel without a process: what DEL asks before
/// it runs `iptables-legacy` on hosts whose legacy `nat` table exists (kube-proxy in legacy
/// mode); a namespace without that table is not given one by asking.
#[test]
fn legacy_nat_chains_are_read_without_a_process() {
    use cni_shared::firewall::ipt::legacy_nat_may_have;
    use cni_shared::firewall::xtables::nat_chains;
    let (with, without) = (Sandbox::new("xt-with"), Sandbox::new("xt-without"));
    for (tool, chain) in [
        ("iptables-legacy", "CNI-LEGACY-V4"),
        ("ip6tables-legacy", "CNI-LEGACY-V6"),
    ] {
        let out = with.exec(tool, &["-t", "nat", "-N", chain]);
        if !out.status.success() {
            eprintln!(
                "SKIPPED legacy_nat_chains_are_read_without_a_process: {tool} failed: {out:?}"
            );
            return;
        }
        with.exec(tool, &["-t", "nat", "-A", chain, "-j", "RETURN"]);
    }
    let (v4, v6, here, gone) = with
        .netns()
        .run(|| {
            (
                nat_chains(false),
                nat_chains(true),
                legacy_nat_may_have(false, Some("CNI-LEGACY-V4")),
                legacy_nat_may_have(true, Some("CNI-NO-SUCH")),
            )
        })
        .unwrap();
    assert_eq!(v4, Some(["CNI-LEGACY-V4".to_string()].into()));
    assert_eq!(v6, Some(["CNI-LEGACY-V6".to_string()].into()));
    assert!(here && !gone);
    let (may, names) = without
        .netns()
        .run(|| {
            (
                legacy_nat_may_have(false, Some("CNI-LEGACY-V4")),
                std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
                    .unwrap_or_default(),
            )
        })
        .unwrap();
    assert!(!may);
    assert!(
        !names.lines().any(|l| l == "nat"),
        "no nat table made: {names:?}"
    );
}

/// `ipMasqBackend` changed from iptables to nftables with containers running: a DEL (with the
/// new config) still removes the iptables entries, as the reference's teardown looks in both,
/// and so does a GC.
#[test]
fn del_and_gc_after_a_change_of_backend_remove_the_old_entries() {
    let host = Sandbox::new("br-chg");
    let ctr = Sandbox::new("br-chg-c");
    let ctr2 = Sandbox::new("br-chg-c2");
    let data = TempDir::new("br-chg");
    let with = |backend: &str| {
        conf(
            &data,
            "br-chg",
            &["10.72.0.0/24", "fd72::/64"],
            json!({"ipMasq": true, "ipMasqBackend": backend}),
        )
    };
    add(&host, &with("iptables"), "k1", &ctr);
    let rules = || ipt_nat(&host, false) + &ipt_nat(&host, true);
    assert_eq!(
        rules().matches("cni:brnet/k1/eth0").count(),
        2 * 4,
        "{}",
        rules()
    );
    add(&host, &with("iptables"), "k2", &ctr2);
    del(&host, &with("nftables"), "k1", Some(&ctr));
    assert!(!rules().contains("cni:brnet/k1/"), "{}", rules());
    assert!(rules().contains("cni:brnet/k2/"), "{}", rules());
    let mut gc = with("nftables");
    gc["cni.dev/valid-attachments"] = json!([]);
    call(&host, Command::Gc, &gc, "", None).unwrap();
    assert!(!rules().contains("cni:brnet/k2/"), "{}", rules());
    assert!(!rules().contains(":CNI-M-"), "{}", rules());
    del(&host, &with("nftables"), "k2", Some(&ctr2));
}

/// The reference bridge's `macspoofchk` entries of an attachment it added (a node switched to
/// ours with its containers running), in both of its layouts (`bridge nat` before 1.6,
/// `bridge cni_spoofcheck` since): our DEL removes the base chain's rule and the two chains
/// of that attachment, and leaves another container's and the tables.
#[test]
fn reference_macspoofchk_entries_go_with_our_del() {
    let host = Sandbox::new("br-refspoof");
    let data = TempDir::new("br-refspoof");
    let layout = |table: &str, base: &str, hook: &str| {
        let mut s = format!("table bridge {table} {{\n");
        for (id, port, mac) in [
            ("Ref-1-eth0", "veth0000aaaa", "0a:58:0a:4a:00:02"),
            ("other-eth0", "veth0000bbbb", "0a:58:0a:4a:00:03"),
        ] {
            let c = format!("comment \"macspoofchk-{id}\"");
            s += &format!(
                "chain cni-br-iface-{id}-mac {{\n ether saddr {mac} return {c}\n drop {c}\n}}\n\
                 chain cni-br-iface-{id} {{\n jump cni-br-iface-{id}-mac {c}\n}}\n"
            );
            s += &format!(
                "chain {base} {{\n type filter hook {hook} priority -300; policy accept;\n \
                 iifname \"{port}\" jump cni-br-iface-{id} {c}\n}}\n"
            );
        }
        s + "}\n"
    };
    let script = layout("nat", "PREROUTING", "prerouting")
        + &layout("cni_spoofcheck", "prerouting", "prerouting");
    let mut load = host.command("nft");
    load.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let loaded = load.spawn().is_ok_and(|mut child| {
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(script.as_bytes());
        }
        child.wait().is_ok_and(|s| s.success())
    });
    assert!(loaded, "loading the reference's layouts:\n{script}");
    let before = nft_ruleset(&host);
    assert_eq!(
        before.matches("macspoofchk-Ref-1-eth0").count(),
        8,
        "{before}"
    );

    let c = conf(
        &data,
        "br-refspoof",
        &["10.74.0.0/24"],
        json!({"macspoofchk": true}),
    );
    // The attachment is gone already (no namespace): DEL finds the entries by name.
    del(&host, &c, "Ref-1", None);
    let after = nft_ruleset(&host);
    assert!(!after.contains("Ref-1"), "{after}");
    assert_eq!(
        after.matches("macspoofchk-other-eth0").count(),
        8,
        "{after}"
    );
    for t in ["table bridge nat", "table bridge cni_spoofcheck"] {
        assert!(
            after.contains(t),
            "{t} stays, as the reference leaves it: {after}"
        );
    }
    // Again: nothing found, success.
    del(&host, &c, "Ref-1", None);
    assert_eq!(nft_ruleset(&host), after);
    // A container ID too long for a chain name (the kernel's 255 bytes) has none to remove.
    del(&host, &c, &"a".repeat(250), None);
    assert_eq!(nft_ruleset(&host), after);
}
