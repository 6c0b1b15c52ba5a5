//! Hostile input for every plugin: malformed and adversarial configurations and environments each
//! get a CNI error with the right code on stdout, never a panic, and change nothing on the host.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cni_shared::skel::Command;
use cni_tests::testkit::{Call, Sandbox, TempDir};
use serde_json::{json, Value};

/// The plugins under test and a valid configuration for each (so that one bad key at a time is
/// what fails).
fn base(plugin: &str, data: &Path) -> Value {
    let ipam =
        json!({"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.66.0.0/24"}]]});
    match plugin {
        "bridge" => json!({"cniVersion": "1.1.0", "name": "hostile", "type": "bridge",
                           "bridge": "hbr0", "ipam": ipam}),
        "macvlan" => json!({"cniVersion": "1.1.0", "name": "hostile", "type": "macvlan",
                            "master": "lan0", "ipam": ipam}),
        "host-local" => {
            json!({"cniVersion": "1.1.0", "name": "hostile", "type": "bridge", "ipam": ipam})
        }
        "loopback" => json!({"cniVersion": "1.1.0", "name": "hostile", "type": "loopback"}),
        "portmap" => json!({"cniVersion": "1.1.0", "name": "hostile", "type": "portmap",
                            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                            "prevResult": {"cniVersion": "1.1.0",
                                           "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                                           "ips": [{"interface": 0, "address": "10.66.0.5/24"}]}}),
        "vxlan" => json!({"cniVersion": "1.1.0", "name": "hostile", "type": "vxlan", "vni": 4242,
                          "underlay": "lan0", "peers": ["192.0.2.2"], "ipam": ipam}),
        other => panic!("no base config for {other}"),
    }
}

const PLUGINS: [&str; 6] = [
    "bridge",
    "macvlan",
    "vxlan",
    "portmap",
    "host-local",
    "loopback",
];

/// The host's observable state: links, addresses, nftables and iptables rules, files under the
/// data dir.
fn snapshot(host: &Sandbox, data: &Path) -> String {
    let mut s = host.ip(&["-o", "link", "show"]);
    // (IPv6 DAD finishing on the link-local address is not a change we made.)
    s.push_str(&host.ip(&["-o", "addr", "show"]).replace(" tentative", ""));
    s.push_str(&String::from_utf8_lossy(
        &host.exec("nft", &["list", "ruleset"]).stdout,
    ));
    s.push_str(
        &String::from_utf8_lossy(&host.exec("iptables-save", &[]).stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut files: Vec<String> = walk(data);
    files.sort();
    s.push_str(&files.join("\n"));
    s
}

fn walk(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p.display().to_string()]
            }
        })
        .collect()
}

struct Case {
    what: &'static str,
    /// Expected CNI error code.
    code: u32,
    /// Raw stdin (None: the mutated base config).
    stdin: Option<Vec<u8>>,
    mutate: fn(&mut Value),
    env: &'static [(&'static str, &'static str)],
    netns: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let keep = |_: &mut Value| {};
    vec![
        Case {
            what: "malformed JSON",
            code: 6,
            stdin: Some(b"{\"cniVersion\": \"1.1.0\", ".to_vec()),
            mutate: keep,
            env: &[],
            netns: None,
        },
        Case {
            what: "a JSON array",
            code: 6,
            stdin: Some(b"[1,2,3]".to_vec()),
            mutate: keep,
            env: &[],
            netns: None,
        },
        Case {
            what: "binary garbage",
            code: 6,
            stdin: Some((0..4096u32).map(|i| (i * 7 % 256) as u8).collect()),
            mutate: keep,
            env: &[],
            netns: None,
        },
        Case {
            what: "1 MB of garbage",
            code: 6,
            stdin: Some(vec![b'{'; 1 << 20]),
            mutate: keep,
            env: &[],
            netns: None,
        },
        Case {
            what: "17 MB stdin",
            code: 6,
            stdin: Some(vec![b' '; 17 << 20]),
            mutate: keep,
            env: &[],
            netns: None,
        },
        Case {
            what: "wrong type for ipMasq",
            code: 7,
            stdin: None,
            mutate: |v| v["ipMasq"] = json!("yes"),
            env: &[],
            netns: None,
        },
        Case {
            what: "wrong type for name",
            code: 7,
            stdin: None,
            mutate: |v| v["name"] = json!(42),
            env: &[],
            netns: None,
        },
        Case {
            what: "unicode network name",
            code: 7,
            stdin: None,
            mutate: |v| v["name"] = json!("ネット"),
            env: &[],
            netns: None,
        },
        Case {
            what: "network name traversal",
            code: 7,
            stdin: None,
            mutate: |v| v["name"] = json!("../../etc"),
            env: &[],
            netns: None,
        },
        Case {
            what: "huge cniVersion",
            code: 1,
            stdin: None,
            mutate: |v| v["cniVersion"] = json!("99999999999999999999.0.0"),
            env: &[],
            netns: None,
        },
        Case {
            what: "container ID traversal",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[("CNI_CONTAINERID", "../../etc")],
            netns: None,
        },
        Case {
            what: "unicode container ID",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[("CNI_CONTAINERID", "c\u{202e}tnoc")],
            netns: None,
        },
        Case {
            what: "ifname traversal",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[("CNI_IFNAME", "../eth0")],
            netns: None,
        },
        Case {
            what: "ifname too long",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[("CNI_IFNAME", "abcdefghijklmnop")],
            netns: None,
        },
        Case {
            what: "unknown command",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[("CNI_COMMAND", "DELETE")],
            netns: None,
        },
        Case {
            what: "netns is a regular file",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[],
            netns: Some("/etc/hostname"),
        },
        Case {
            what: "netns is a mount namespace",
            code: 4,
            stdin: None,
            mutate: keep,
            env: &[],
            netns: Some("/proc/self/ns/mnt"),
        },
        Case {
            what: "netns does not exist",
            code: 3,
            stdin: None,
            mutate: keep,
            env: &[],
            netns: Some("/run/netns/cni-hostile-missing"),
        },
    ]
}

/// IPAM-specific hostile keys, for the plugins that delegate to host-local.
fn ipam_cases() -> Vec<Case> {
    vec![
        Case {
            what: "dataDir traversal",
            code: 7,
            stdin: None,
            mutate: |v| v["ipam"]["dataDir"] = json!("/tmp/../etc/cni"),
            env: &[],
            netns: None,
        },
        Case {
            what: "relative dataDir",
            code: 7,
            stdin: None,
            mutate: |v| v["ipam"]["dataDir"] = json!("var/lib"),
            env: &[],
            netns: None,
        },
        Case {
            what: "IPAM type is a path",
            code: 7,
            stdin: None,
            mutate: |v| v["ipam"]["type"] = json!("../../../bin/sh"),
            env: &[],
            netns: None,
        },
        Case {
            what: "huge subnet prefix",
            code: 7,
            stdin: None,
            mutate: |v| v["ipam"]["ranges"][0][0]["subnet"] = json!("10.0.0.0/4294967296"),
            env: &[],
            netns: None,
        },
        Case {
            what: "ranges of the wrong type",
            code: 7,
            stdin: None,
            mutate: |v| v["ipam"]["ranges"] = json!({"a": 1}),
            env: &[],
            netns: None,
        },
    ]
}

/// portmap's own hostile keys.
fn portmap_cases() -> Vec<Case> {
    vec![
        Case {
            what: "hostPort out of range",
            code: 7,
            stdin: None,
            mutate: |v| v["runtimeConfig"]["portMappings"][0]["hostPort"] = json!(70000),
            env: &[],
            netns: None,
        },
        Case {
            what: "negative containerPort",
            code: 7,
            stdin: None,
            mutate: |v| v["runtimeConfig"]["portMappings"][0]["containerPort"] = json!(-1),
            env: &[],
            netns: None,
        },
        Case {
            what: "unknown protocol",
            code: 7,
            stdin: None,
            mutate: |v| v["runtimeConfig"]["portMappings"][0]["protocol"] = json!("icmp"),
            env: &[],
            netns: None,
        },
        Case {
            what: "hostIP not an address",
            code: 7,
            stdin: None,
            mutate: |v| v["runtimeConfig"]["portMappings"][0]["hostIP"] = json!("; drop table"),
            env: &[],
            netns: None,
        },
        Case {
            what: "iptables option with nftables",
            code: 7,
            stdin: None,
            mutate: |v| {
                v["backend"] = json!("nftables");
                v["markMasqBit"] = json!(13);
            },
            env: &[],
            netns: None,
        },
        Case {
            what: "no prevResult",
            code: 7,
            stdin: None,
            mutate: |v| {
                v.as_object_mut().unwrap().remove("prevResult");
            },
            env: &[],
            netns: None,
        },
    ]
}

#[test]
fn hostile_input_gets_cni_errors_and_changes_nothing() {
    let host = Sandbox::new("hostile");
    let lan = Sandbox::new("hostile-lan");
    host.link_to("lan0", &lan, "lan1");
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "lan0"]);
    let ctr = Sandbox::new("hostile-c");
    let data = TempDir::new("hostile-data");
    let before = snapshot(&host, data.path());
    let mut failures = Vec::new();
    for plugin in PLUGINS {
        let mut all = cases();
        if plugin != "loopback" && plugin != "portmap" {
            all.extend(ipam_cases());
        }
        if plugin == "portmap" {
            all.extend(portmap_cases());
        }
        for case in all {
            // host-local and portmap never open the namespace (portmap works from the
            // prevResult), and host-local is its own IPAM type: those cases are moot for them.
            let no_netns = plugin == "host-local" || plugin == "portmap";
            if (no_netns && case.netns.is_some())
                || (plugin == "host-local" && case.what == "IPAM type is a path")
            {
                continue;
            }
            let mut cfg = base(plugin, data.path());
            (case.mutate)(&mut cfg);
            let netns = case.netns.map(Path::new).unwrap_or(ctr.path());
            let mut call =
                Call::new(plugin, Command::Add, cfg).container("hostile-ctr", "eth0", Some(netns));
            for (k, v) in case.env {
                call = call.env(k, v);
            }
            let got = match &case.stdin {
                Some(raw) => call.run_raw_in(&host, raw),
                None => call.run_in(&host),
            };
            match got {
                Ok(out) => failures.push(format!(
                    "{plugin}: {}: succeeded: {}",
                    case.what,
                    String::from_utf8_lossy(&out.stdout)
                )),
                Err(e) if e.code != case.code => failures.push(format!(
                    "{plugin}: {}: code {} (want {}): {}",
                    case.what, e.code, case.code, e.msg
                )),
                Err(e) if e.msg.contains("panic") => {
                    failures.push(format!("{plugin}: {}: panicked: {}", case.what, e.msg))
                }
                Err(_) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "hostile input mishandled:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        snapshot(&host, data.path()),
        before,
        "hostile input changed the host"
    );
    assert!(
        !ctr.has_link("eth0"),
        "hostile input created the container interface"
    );
}
