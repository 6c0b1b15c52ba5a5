//! A node switched from the reference plugins to ours while its containers run: our DEL of an
//! attachment the reference added removes the reference's iptables chains of that attachment
//! (bridge's masquerade chain, portmap's DNAT chain) and the jumps to them, or its nftables
//! backend's rules of that attachment, and nothing else.

use std::io::Write;
use std::path::Path;

use cni_shared::firewall::reference::Leftover;
use cni_shared::skel::Command;
use cni_tests::testkit::{Cnitool, Sandbox, TempDir};
use serde_json::json;

use super::{sa, tcp_ok, Env, EXT_HOST4};

/// Straight to stderr (the harness captures `eprintln!`), so that a skip is seen.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The reference's rules for attachment `id` of network `net` (as its 1.1.1 makes them for
/// one TCP mapping 8080 → 80 of 10.80.19.<n>), in restore syntax.
fn reference_rules(net: &str, id: &str, n: u8) -> String {
    let masq = Leftover::Masquerade.chain(net, id);
    let dnat = Leftover::HostPorts.chain(net, id);
    let comment = format!("\"name: \\\"{net}\\\" id: \\\"{id}\\\"\"");
    let dnat_comment = format!("\"dnat name: \\\"{net}\\\" id: \\\"{id}\\\"\"");
    format!(
        ":{masq} - [0:0]\n:{dnat} - [0:0]\n\
         -A POSTROUTING -s 10.80.19.{n}/32 -m comment --comment {comment} -j {masq}\n\
         -A {masq} -d 10.80.19.0/24 -m comment --comment {comment} -j ACCEPT\n\
         -A {masq} ! -d 224.0.0.0/4 -m comment --comment {comment} -j MASQUERADE\n\
         -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {dnat_comment} -m multiport \
         --dports 8080 -j {dnat}\n\
         -A {dnat} -s 10.80.19.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK\n\
         -A {dnat} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.80.19.{n}:80\n"
    )
}

/// Load the reference's layout for attachments "Gone-1" and "Stays-2" of `pmnet` and "Gone-1"
/// of `othernet` with `tool` (an iptables-restore); false when the tool cannot work here.
fn load(host: &Sandbox, tool: &str) -> bool {
    let input = format!(
        "*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n:CNI-HOSTPORT-SETMARK - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n{}{}{}COMMIT\n",
        reference_rules("pmnet", "Gone-1", 5),
        reference_rules("pmnet", "Stays-2", 6),
        reference_rules("othernet", "Gone-1", 7)
    );
    let mut c = host.command(tool);
    c.arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let Ok(mut child) = c.spawn() else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

/// The `nat` table as `save` prints it, without its comment lines (they carry the time).
fn nat(host: &Sandbox, save: &str) -> String {
    String::from_utf8_lossy(&host.exec(save, &["-t", "nat"]).stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Our portmap, then our bridge (`ipMasq`, bridge `bridge`, IPAM on `subnet`), of network
/// `pmnet` in `host`: DEL of attachment "Gone-1" (its container gone: no CNI_NETNS), or GC
/// with "Stays-2" the valid attachment.
fn ours(host: &Sandbox, verb: Command, bridge: &str, subnet: &str, data: &TempDir) {
    let mut bridge = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "bridge",
        "bridge": bridge, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": subnet}]]}});
    let mut portmap = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap",
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}});
    if verb == Command::Gc {
        let valid = json!([{"containerID": "Stays-2", "ifname": "eth0"}]);
        bridge["cni.dev/valid-attachments"] = valid.clone();
        portmap["cni.dev/valid-attachments"] = valid;
    }
    let id = if verb == Command::Gc { "" } else { "Gone-1" };
    for (plugin, conf) in [("portmap", portmap), ("bridge", bridge)] {
        cni_tests::testkit::Call::new(plugin, verb, conf)
            .container(id, "eth0", None)
            .run_in(host)
            .unwrap_or_else(|e| panic!("{plugin} {verb:?}: {e}"));
    }
}

fn removes_only_the_deleted_attachments_chains(variant: &str, verb: Command) {
    let test = format!("reference_chains_go_with_our_{verb:?}_{variant}");
    let (restore, save) = (
        format!("iptables-{variant}-restore"),
        format!("iptables-{variant}-save"),
    );
    let host = Sandbox::new(&format!("pm-sw-{variant}"));
    if !load(&host, &restore) {
        return skipped(&test, &format!("{restore} is missing or cannot work here"));
    }
    let before = nat(&host, &save);
    let gone = [
        Leftover::Masquerade.chain("pmnet", "Gone-1"),
        Leftover::HostPorts.chain("pmnet", "Gone-1"),
    ];
    let stay = [
        Leftover::Masquerade.chain("pmnet", "Stays-2"),
        Leftover::HostPorts.chain("pmnet", "Stays-2"),
        Leftover::Masquerade.chain("othernet", "Gone-1"),
        Leftover::HostPorts.chain("othernet", "Gone-1"),
    ];
    for c in gone.iter().chain(&stay) {
        assert!(before.contains(&format!("-j {c}")), "{c} in {before}");
    }
    // DEL: the chains are found by name. GC: by the comments of the jumps to them.
    let data = TempDir::new("pm-sw");
    ours(&host, verb, "pm-br19", "10.80.19.0/24", &data);
    let after = nat(&host, &save);
    for c in &gone {
        assert!(!after.contains(c.as_str()), "{c} left: {after}");
    }
    for c in &stay {
        assert!(after.contains(&format!("-j {c}")), "{c} removed: {after}");
    }
    assert!(after.contains("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"));
    // Again: nothing found, success.
    ours(&host, verb, "pm-br19", "10.80.19.0/24", &data);
    assert_eq!(nat(&host, &save), after);
}

#[test]
fn reference_chains_go_with_our_del_nft() {
    removes_only_the_deleted_attachments_chains("nft", Command::Del);
}

#[test]
fn reference_chains_go_with_our_del_legacy() {
    removes_only_the_deleted_attachments_chains("legacy", Command::Del);
}

#[test]
fn reference_chains_of_gone_containers_go_with_our_gc_nft() {
    removes_only_the_deleted_attachments_chains("nft", Command::Gc);
}

#[test]
fn reference_chains_of_gone_containers_go_with_our_gc_legacy() {
    removes_only_the_deleted_attachments_chains("legacy", Command::Gc);
}

/// The reference's nftables backend (its 1.5+): bridge's masquerade rules and portmap's DNAT
/// and masquerading rules of attachments "Gone-1" and "Stays-2" of `pmnet` and a masquerade rule
/// of "Gone-1" on `othernet`, laid out and commented as its knftables code makes them (the
/// masquerade comments start with sha512("<network>") and sha512("<ifname>:<id>") cut to 16:
/// `printf pmnet | sha512sum`).
const REFERENCE_NFT: &str = r#"
table inet cni_plugins_masquerade {
    chain masq_checks {
        ip saddr 10.80.21.5 ip daddr != 10.80.21.0/24 masquerade comment "283a4b7588489c88-96fbfd7b3328237e, net: pmnet, if: eth0, id: Gone-1"
        ip6 saddr fd80:21::5 ip6 daddr != fd80:21::/64 masquerade comment "283a4b7588489c88-96fbfd7b3328237e, net: pmnet, if: eth0, id: Gone-1"
        ip saddr 10.80.21.6 ip daddr != 10.80.21.0/24 masquerade comment "283a4b7588489c88-14267e51d2da7e9e, net: pmnet, if: eth0, id: Stays-2"
        ip saddr 10.80.22.5 ip daddr != 10.80.22.0/24 masquerade comment "0e0993d3a5cba48c-96fbfd7b3328237e, net: othernet, if: eth0, id: Gone-1"
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip daddr 224.0.0.0/4 return
        ip6 daddr ff00::/8 return
        goto masq_checks
    }
}
table ip cni_hostport {
    chain hostports {
        tcp dport 8080 dnat to 10.80.21.5:80 comment "Gone-1"
        tcp dport 8081 dnat to 10.80.21.6:80 comment "Stays-2"
    }
    chain hostip_hostports {
        ip daddr 192.0.2.1 udp dport 5353 dnat to 10.80.21.5:53 comment "Gone-1"
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump hostip_hostports
        jump hostports
    }
    chain masquerading {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.80.21.5 ip daddr 10.80.21.5 masquerade comment "Gone-1"
        ip saddr 127.0.0.1 ip daddr 10.80.21.5 masquerade comment "Gone-1"
        ip saddr 10.80.21.6 ip daddr 10.80.21.6 masquerade comment "Stays-2"
    }
}
table ip6 cni_hostport {
    chain hostports {
        tcp dport 8080 dnat to [fd80:21::5]:80 comment "Gone-1"
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump hostports
    }
}
"#;

/// The comments of the rules in the reference's tables, sorted.
fn reference_nft_comments(host: &Sandbox) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "inet cni_plugins_masquerade",
        "ip cni_hostport",
        "ip6 cni_hostport",
    ] {
        let (family, name) = table.split_once(' ').unwrap();
        let listing = host.exec("nft", &["list", "table", family, name]);
        let text = String::from_utf8_lossy(&listing.stdout);
        for line in text.lines() {
            if let Some((_, c)) = line.split_once("comment \"") {
                out.push(format!("{table}: {}", c.trim_end_matches('"')));
            }
        }
    }
    out.sort();
    out
}

fn reference_nftables_rules_go(verb: Command) {
    let test = format!("reference_nftables_rules_go_with_our_{verb:?}");
    let host = Sandbox::new("pm-sw-nft");
    let nft_load = |script: &str| {
        let mut c = host.command("nft");
        c.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        c.spawn().is_ok_and(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(script.as_bytes());
            }
            child.wait().is_ok_and(|s| s.success())
        })
    };
    if !nft_load(REFERENCE_NFT) {
        return skipped(
            &test,
            "nft is missing or cannot load the reference's layout here",
        );
    }
    let before = reference_nft_comments(&host);
    assert_eq!(before.len(), 11, "{before:#?}");
    if verb == Command::Gc {
        // More stale rules of pmnet than one transaction takes (GC deletes 128 at a time).
        let bulk: String = (0..300)
            .map(|i| {
                format!(
                    "add rule inet cni_plugins_masquerade masq_checks ip saddr 10.80.23.{} \
                     masquerade comment \"283a4b7588489c88-{i:016x}, net: pmnet, if: eth0, \
                     id: bulk-{i}\"\n",
                    i % 250 + 1
                )
            })
            .collect();
        assert!(nft_load(&bulk), "loading 300 more rules");
        assert_eq!(reference_nft_comments(&host).len(), 311);
    }
    let data = TempDir::new("pm-sw-nft");
    ours(&host, verb, "pm-br21", "10.80.21.0/24", &data);
    let after = reference_nft_comments(&host);
    // Masquerade: the rules of pmnet's Gone-1 on eth0 go, also by GC; othernet's stay.
    let masq_gone = "inet cni_plugins_masquerade: 283a4b7588489c88-96fbfd7b3328237e";
    let mut want: Vec<String> = before
        .iter()
        .filter(|c| !c.starts_with(masq_gone))
        .cloned()
        .collect();
    // Portmap's rules name no network: DEL removes the container's in both families, as the
    // reference's own DEL does; GC cannot tell them from another network's and leaves them.
    if verb == Command::Del {
        want.retain(|c| !c.ends_with("cni_hostport: Gone-1"));
    }
    assert_eq!(after, want);
    let tables = host.exec("nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout);
    for t in [
        "inet cni_plugins_masquerade",
        "ip cni_hostport",
        "ip6 cni_hostport",
    ] {
        assert!(
            tables.contains(t),
            "{t} stays, as the reference leaves it: {tables}"
        );
    }
    // Again: nothing found, success, nothing changed.
    ours(&host, verb, "pm-br21", "10.80.21.0/24", &data);
    assert_eq!(reference_nft_comments(&host), after);
}

#[test]
fn reference_nftables_rules_go_with_our_del() {
    reference_nftables_rules_go(Command::Del);
}

#[test]
fn reference_nftables_rules_of_gone_containers_go_with_our_gc() {
    reference_nftables_rules_go(Command::Gc);
}

/// With the reference plugins installed (Debian's containernetworking-plugins): a container
/// added by them, deleted by ours; then a container of ours publishes the same host port and
/// gets its traffic.
#[test]
fn switch_from_the_reference_with_a_container_running() {
    let test = "switch_from_the_reference_with_a_container_running";
    let reference = Path::new("/usr/lib/cni");
    if !reference.join("portmap").is_file() || !reference.join("bridge").is_file() {
        return skipped(
            test,
            "the reference plugins are not in /usr/lib/cni (apt-get install \
             containernetworking-plugins; scripts/test.sh tries)",
        );
    }
    let env = Env::new("pm-sw-ref", "nftables", 20);
    let netconf = TempDir::new("pm-sw-conf");
    let cache = TempDir::new("pm-sw-cache");
    let mut bridge = env.bridge.clone();
    for k in ["cniVersion", "name"] {
        bridge.as_object_mut().unwrap().remove(k);
    }
    // CNI 1.0.0: the newest the reference 1.1.1 speaks. IPv4 only: its portmap needs ip6tables
    // rules we do not look at here.
    bridge["ipam"]["ranges"] = json!([[{"subnet": "10.80.20.0/24"}]]);
    bridge["ipMasq"] = json!(true);
    let list = json!({"cniVersion": "1.0.0", "name": "pmnet", "plugins": [bridge,
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]});
    std::fs::write(netconf.path().join("pmnet.conflist"), list.to_string()).unwrap();
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
    let theirs = Cnitool::new(&env.host, netconf.path(), cache.path())
        .cni_path(reference.display().to_string());
    let ours = Cnitool::new(&env.host, netconf.path(), cache.path());
    let (old, new) = (Sandbox::new("pm-sw-old"), Sandbox::new("pm-sw-new"));
    let netns = |s: &Sandbox| s.path().display().to_string();
    let env_of = |id: &'static str| {
        [
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CAP_ARGS", caps),
        ]
    };
    theirs
        .run(&["add", "pmnet", &netns(&old)], &env_of("Old-1"))
        .ok();
    let chains = [
        Leftover::Masquerade.chain("pmnet", "Old-1"),
        Leftover::HostPorts.chain("pmnet", "Old-1"),
    ];
    let before = nat(&env.host, "iptables-save");
    for c in &chains {
        assert!(before.contains(&format!("-j {c}")), "{c} in {before}");
    }
    // Our CHECK of the reference's attachment (its result from the shared cache): the
    // reference's masquerade and DNAT chains stand in for our entries.
    ours.run(&["check", "pmnet", &netns(&old)], &env_of("Old-1"))
        .ok();
    ours.run(&["del", "pmnet", &netns(&old)], &env_of("Old-1"))
        .ok();
    let after = nat(&env.host, "iptables-save");
    for c in &chains {
        assert!(!after.contains(c.as_str()), "{c} left: {after}");
    }
    // The replacement publishes the same port and gets the traffic.
    let r = ours
        .run(&["add", "pmnet", &netns(&new)], &env_of("New-2"))
        .ok()
        .json();
    let ip = r["ips"][0]["address"].as_str().unwrap().split('/').next();
    let listen = sa(ip.unwrap(), 80);
    assert!(tcp_ok(&new, listen, &env.ext, sa(EXT_HOST4, 8080)));
    ours.run(&["del", "pmnet", &netns(&new)], &env_of("New-2"))
        .ok();
}
