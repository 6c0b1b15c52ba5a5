//! Conflicts, CHECK, DEL without runtimeConfig or namespace, GC, many attachments, STATUS and
//! bad input.

use cni_shared::skel::Command;
use cni_tests::testkit::Sandbox;
use serde_json::{json, Value};

use super::{sa, tcp_fails, tcp_ok, Env, EXT_HOST4};

/// A prevResult for an attachment that needs no real container (the plugin only reads it).
fn fake_prev(addr4: &str) -> Value {
    json!({"cniVersion": "1.1.0",
           "interfaces": [{"name": "eth0", "sandbox": "/run/netns/none"}],
           "ips": [{"address": addr4, "interface": 0}]})
}

fn tcp(port: u16, cport: u16) -> Value {
    json!([{"hostPort": port, "containerPort": cport, "protocol": "tcp"}])
}

fn conflicts_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-cf-{}", &backend[..3]), backend, n);
    let (c1, c2) = (Sandbox::new("pm-cf-c1"), Sandbox::new("pm-cf-c2"));
    let r1 = env.attach("owner1", &c1, tcp(8080, 80)).unwrap();
    let r2 = env
        .call(
            "bridge",
            Command::Add,
            &env.bridge,
            "late2",
            Some(c2.path()),
        )
        .unwrap();
    let c = env.pm_conf(Some(tcp(8080, 81)), Some(&r2), json!({}));
    let e = env
        .call("portmap", Command::Add, &c, "late2", Some(c2.path()))
        .unwrap_err();
    assert_eq!(e.code, 101, "{}", e.msg);
    assert!(e.msg.contains("container owner1"), "{}", e.msg);
    assert!(e.msg.contains("tcp/8080"), "{}", e.msg);
    // hostIP on a port published on every address: refused too. Other protocol: fine.
    let pinned = json!([{"hostPort": 8080, "containerPort": 80, "hostIP": EXT_HOST4}]);
    let c = env.pm_conf(Some(pinned), Some(&r2), json!({}));
    let e = env
        .call("portmap", Command::Add, &c, "late2", Some(c2.path()))
        .unwrap_err();
    assert_eq!(e.code, 101, "{}", e.msg);
    let udp = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "udp"}]);
    let c = env.pm_conf(Some(udp.clone()), Some(&r2), json!({}));
    env.call("portmap", Command::Add, &c, "late2", Some(c2.path()))
        .unwrap();
    // The runtime cleans up the refused attachment: the owner's mapping stays.
    env.detach("late2", Some(&c2), tcp(8080, 81), &r2);
    assert!(tcp_ok(
        &c1,
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 8080)
    ));
    // A repeated ADD of the same attachment replaces its own entries.
    let again = env.pm_conf(Some(tcp(8080, 82)), Some(&r1), json!({}));
    env.call("portmap", Command::Add, &again, "owner1", Some(c1.path()))
        .unwrap();
    assert!(tcp_ok(
        &c1,
        sa("0.0.0.0", 82),
        &env.ext,
        sa(EXT_HOST4, 8080)
    ));
    // ... also with other mappings: the earlier ones go.
    let moved = env.pm_conf(Some(tcp(8090, 80)), Some(&r1), json!({}));
    env.call("portmap", Command::Add, &moved, "owner1", Some(c1.path()))
        .unwrap();
    assert!(tcp_ok(
        &c1,
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 8090)
    ));
    assert!(tcp_fails(
        &c1,
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 8080)
    ));
    env.detach("owner1", Some(&c1), tcp(8090, 80), &r1);
    assert!(!env.rules().contains("cni:pmnet/"), "{}", env.rules());
}

#[test]
fn conflicts_nftables() {
    conflicts_with("nftables", 10);
}

#[test]
fn conflicts_iptables() {
    conflicts_with("iptables", 11);
}

/// Delete the DNAT of tcp/8080 behind the plugin's back.
fn delete_by_hand(env: &Env) {
    if env.backend == "nftables" {
        let out = env.host.exec(
            "nft",
            &["delete element inet cni_hostport dnat4 { tcp . 8080 }"],
        );
        assert!(out.status.success(), "{out:?}");
        return;
    }
    let save = String::from_utf8_lossy(&env.host.exec("iptables-save", &["-t", "nat"]).stdout)
        .into_owned();
    let rule = save
        .lines()
        .find(|l| l.contains("-j DNAT") && l.contains("cni:pmnet/hand/eth0"))
        .unwrap_or_else(|| panic!("no DNAT rule: {save}"));
    let cmd = format!("iptables -t nat {}", rule.replacen("-A ", "-D ", 1));
    let out = env.host.exec("sh", &["-c", &cmd]);
    assert!(out.status.success(), "{cmd}: {out:?}");
}

fn check_and_del_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-ck-{}", &backend[..3]), backend, n);
    let c1 = Sandbox::new("pm-ck-c1");
    let r = env.attach("hand", &c1, tcp(8080, 80)).unwrap();
    let check = env.pm_conf(Some(tcp(8080, 80)), Some(&r), json!({}));
    env.call("portmap", Command::Check, &check, "hand", Some(c1.path()))
        .unwrap();
    delete_by_hand(&env);
    let e = env
        .call("portmap", Command::Check, &check, "hand", Some(c1.path()))
        .unwrap_err();
    assert!(e.msg.contains("8080"), "{}", e.msg);
    // DEL with neither runtimeConfig nor prevResult nor namespace: found by tag.
    let bare = env.pm_conf(None, None, json!({}));
    env.call("portmap", Command::Del, &bare, "hand", None)
        .unwrap();
    assert!(!env.rules().contains("cni:pmnet/hand/"), "{}", env.rules());
    assert!(
        !env.rules().contains(":CNI-HP-"),
        "the chain went too: {}",
        env.rules()
    );
    env.call("portmap", Command::Del, &bare, "hand", None)
        .unwrap();
    env.call("bridge", Command::Del, &env.bridge, "hand", Some(c1.path()))
        .unwrap();
    assert!(tcp_fails(
        &c1,
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 8080)
    ));
}

#[test]
fn check_and_del_nftables() {
    check_and_del_with("nftables", 12);
}

#[test]
fn check_and_del_iptables() {
    check_and_del_with("iptables", 13);
}

/// 100 containers with one mapping each (bridge + portmap), traffic to one of them, GC keeping
/// two mappings, then the DEL of every container leaves no entry.
fn many_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-many-{}", &backend[..3]), backend, n);
    let ctrs: Vec<Sandbox> = (0..100)
        .map(|i| Sandbox::new(&format!("pm-m{i}")))
        .collect();
    let results: Vec<Value> = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            env.attach(&format!("m{i}"), c, tcp(20000 + i as u16, 80))
                .unwrap_or_else(|e| panic!("ADD m{i}: {e}"))
        })
        .collect();
    let rules = env.rules();
    assert!(rules.matches("cni:pmnet/m").count() >= 100, "{rules}");
    assert!(tcp_ok(
        &ctrs[57],
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 20057)
    ));
    let mut gc = env.pm_conf(None, None, json!({}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "m1", "ifname": "eth0"},
                                            {"containerID": "m2", "ifname": "eth0"}]);
    env.call("portmap", Command::Gc, &gc, "", None).unwrap();
    let rules = env.rules();
    assert!(rules.contains("cni:pmnet/m1/eth0") && rules.contains("cni:pmnet/m2/eth0"));
    assert!(!rules.contains("cni:pmnet/m3/eth0"), "{rules}");
    assert!(tcp_fails(
        &ctrs[57],
        sa("0.0.0.0", 80),
        &env.ext,
        sa(EXT_HOST4, 20057)
    ));
    for (i, (c, r)) in ctrs.iter().zip(&results).enumerate() {
        env.detach(&format!("m{i}"), Some(c), tcp(20000 + i as u16, 80), r);
    }
    let rules = env.rules();
    assert!(!rules.contains("cni:pmnet/"), "{rules}");
    if backend == "nftables" {
        assert!(!rules.contains("elements"), "every map is empty: {rules}");
    } else {
        assert!(!rules.contains(":CNI-HP-"), "{rules}");
    }
    // The network's shared hairpin chain stays until a GC finds no attachment using it (it
    // used to stay for ever).
    if backend == "nftables" {
        assert!(rules.contains("comment \"cni:pmnet 10.80."), "{rules}");
    }
    // GC needs no nft engine (`CNI_NFT=none`, as on a host whose nft binary is gone).
    gc["cni.dev/valid-attachments"] = json!([]);
    cni_tests::testkit::Call::new("portmap", Command::Gc, gc)
        .env("CNI_NFT", "none")
        .run_in(&env.host)
        .unwrap();
    let rules = env.rules();
    assert!(!rules.contains("cni:pmnet"), "{rules}");
}

#[test]
fn many_attachments_nftables() {
    many_with("nftables", 14);
}

#[test]
fn many_attachments_iptables() {
    many_with("iptables", 15);
}

#[test]
fn status_and_bad_input() {
    let env = Env::new("pm-bad", "nftables", 16);
    for backend in ["nftables", "iptables"] {
        let c = env.pm_conf(None, None, json!({"backend": backend}));
        env.call("portmap", Command::Status, &c, "", None).unwrap();
    }
    // No prevResult: code 7.
    let c = env.pm_conf(Some(tcp(1, 1)), None, json!({}));
    let e = env
        .call("portmap", Command::Add, &c, "x", Some(env.host.path()))
        .unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.contains("prevResult"), "{}", e.msg);
    // An option of the other backend: code 7 naming it.
    let prev = fake_prev("10.80.16.2/24");
    let c = env.pm_conf(Some(tcp(1, 1)), Some(&prev), json!({"markMasqBit": 3}));
    let e = env
        .call("portmap", Command::Add, &c, "x", Some(env.host.path()))
        .unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(e.msg.starts_with("markMasqBit"), "{}", e.msg);
    // No mappings: the prevResult passes through in the config's version.
    let mut c = env.pm_conf(None, Some(&prev), json!({}));
    c["cniVersion"] = json!("0.4.0");
    let out = env
        .call("portmap", Command::Add, &c, "x", Some(env.host.path()))
        .unwrap();
    assert_eq!(out["cniVersion"], "0.4.0");
    assert_eq!(out["ips"][0]["address"], "10.80.16.2/24");
    // Conditions in nft syntax reach the rules.
    let c = env.pm_conf(
        Some(tcp(2, 2)),
        Some(&prev),
        json!({"conditionsV4": ["ip saddr != 203.0.113.0/24"]}),
    );
    env.call("portmap", Command::Add, &c, "cond", Some(env.host.path()))
        .unwrap();
    assert!(
        env.rules().contains("ip saddr != 203.0.113.0/24"),
        "{}",
        env.rules()
    );
    env.call("portmap", Command::Del, &c, "cond", None).unwrap();
    assert!(!env.rules().contains("cni:pmnet/cond/"), "{}", env.rules());
    // DEL cleans up even when its configuration does not validate (found by tag).
    let c = env.pm_conf(Some(tcp(3, 3)), Some(&prev), json!({}));
    env.call("portmap", Command::Add, &c, "inv", Some(env.host.path()))
        .unwrap();
    let bad = json!([{"hostPort": 3, "containerPort": 3, "protocol": "icmp"}]);
    let c = env.pm_conf(Some(bad), Some(&prev), json!({"markMasqBit": 99}));
    env.call("portmap", Command::Del, &c, "inv", None).unwrap();
    assert!(!env.rules().contains("cni:pmnet/inv/"), "{}", env.rules());
}

/// Run portmap in the host with /usr/sbin (and /sbin) hidden behind an empty tmpfs in a private
/// mount namespace, so neither nft nor iptables can be found.
fn without_sbin(
    env: &Env,
    cmd: Command,
    c: &Value,
    extra: &[(&str, &str)],
) -> cni_shared::CniError {
    let script = "mount -t tmpfs none /usr/sbin && { mount -t tmpfs none /sbin 2>/dev/null; \
                  true; } && exec \"$0\"";
    let mut p = env.host.command("unshare");
    p.args(["-m", "sh", "-c", script])
        .arg(cni_tests::testkit::plugin_path("portmap"))
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_PATH", cni_tests::testkit::bin_dir())
        .env("CNI_CONTAINERID", "nosbin")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", env.host.path());
    for (k, v) in extra {
        p.env(k, v);
    }
    let stdin = serde_json::to_vec(c).unwrap();
    cni_shared::invoke::communicate(p, &stdin).unwrap_err()
}

#[test]
fn an_unusable_backend_is_status_50_naming_it() {
    let env = Env::new("pm-nosbin", "iptables", 17);
    let ipt = env.pm_conf(None, None, json!({}));
    let e = without_sbin(&env, Command::Status, &ipt, &[]);
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("backend iptables"), "{}", e.msg);
    let nft = env.pm_conf(None, None, json!({"backend": "nftables"}));
    let e = without_sbin(&env, Command::Status, &nft, &[("CNI_NFT", "binary")]);
    assert_eq!(e.code, 50, "{}", e.msg);
    assert!(e.msg.contains("backend nftables"), "{}", e.msg);
    // ADD says so too; DEL has nothing to remove and succeeds.
    let prev = fake_prev("10.80.17.2/24");
    let add = env.pm_conf(Some(tcp(5, 5)), Some(&prev), json!({}));
    let e = without_sbin(&env, Command::Add, &add, &[]);
    assert_eq!(e.code, 50, "{}", e.msg);
}

#[test]
fn the_nft_binary_path_works_too() {
    let env = Env::new("pm-nftbin", "nftables", 18);
    let prev = fake_prev("10.80.18.2/24");
    let c = env.pm_conf(Some(tcp(7, 7)), Some(&prev), json!({}));
    let run = |cmd: Command, c: &Value| {
        cni_tests::testkit::Call::new("portmap", cmd, c.clone())
            .container("bin", "eth0", Some(env.host.path()))
            .env("CNI_NFT", "binary")
            .run_in(&env.host)
    };
    run(Command::Add, &c).unwrap();
    run(Command::Check, &c).unwrap();
    assert!(env.rules().contains("cni:pmnet/bin/eth0"));
    // CHECK asks the kernel: no engine needed.
    cni_tests::testkit::Call::new("portmap", Command::Check, c.clone())
        .container("bin", "eth0", Some(env.host.path()))
        .env("CNI_NFT", "none")
        .run_in(&env.host)
        .unwrap();
    run(Command::Del, &env.pm_conf(None, None, json!({}))).unwrap();
    assert!(
        !env.rules().contains("cni:pmnet/bin/eth0"),
        "{}",
        env.rules()
    );
}
