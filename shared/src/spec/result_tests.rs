//! Conversion between every pair of result versions.

use serde_json::json;

use super::result::*;
use super::version::{ResultShape, Version};

fn sample() -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth12345678", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1400},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/c1",
             "mtu": 1400, "socketPath": "/run/x.sock", "pciID": "0000:00:01.0", "x-vendor": 1}
        ],
        "ips": [
            {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
            {"interface": 2, "address": "10.2.0.5/24"}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1300, "advmss": 1200, "priority": 5,
             "table": 100, "scope": 0},
            {"dst": "::/0", "gw": "fd00::1"},
            {"dst": "192.168.0.0/16"}
        ],
        "dns": {"nameservers": ["10.1.0.1"], "domain": "example.org", "search": ["example.org"],
                "options": ["ndots:2"]},
        "x-extension": {"keep": true}
    })
}

fn roundtrip(from: Version, to: Version) -> (serde_json::Value, CniResult) {
    let (_, canonical) = CniResult::from_value(&sample(), Version::V1_1_0).unwrap();
    let written = canonical.to_value(from).unwrap();
    let (seen, decoded) = CniResult::from_value(&written, Version::V0_1_0).unwrap();
    assert_eq!(seen, from);
    let out = decoded.to_value(to).unwrap();
    let (_, back) = CniResult::from_value(&out, Version::V0_1_0).unwrap();
    (out, back)
}

#[test]
fn every_pair_of_versions_converts_by_the_spec_rules() {
    for from in Version::ALL {
        for to in Version::ALL {
            let (out, back) = roundtrip(from, to);
            let label = format!("{from} -> {to}");
            assert_eq!(out["cniVersion"], to.as_str(), "{label}");
            let legacy_on_path = from.result_shape() == ResultShape::Legacy
                || to.result_shape() == ResultShape::Legacy;
            let current_both = from.result_shape() == ResultShape::Current
                && to.result_shape() == ResultShape::Current;

            // Addresses: legacy keeps the first v4 and the first v6 only.
            let addrs: Vec<String> = back.ips.iter().map(|i| i.address.to_string()).collect();
            if legacy_on_path {
                assert_eq!(addrs, ["10.1.0.5/24", "fd00::5/64"], "{label}");
                assert!(back.interfaces.is_empty(), "{label}");
                assert!(back.ips.iter().all(|i| i.interface.is_none()), "{label}");
            } else {
                assert_eq!(
                    addrs,
                    ["10.1.0.5/24", "fd00::5/64", "10.2.0.5/24"],
                    "{label}"
                );
                assert_eq!(back.interfaces.len(), 3, "{label}");
                assert_eq!(back.ips[0].interface, Some(2), "{label}");
            }
            assert_eq!(
                back.ips[0].gateway.map(|g| g.to_string()).as_deref(),
                Some("10.1.0.1"),
                "{label}"
            );

            // Routes survive in every version (legacy files them under their family).
            let dsts: Vec<String> = back.routes.iter().map(|r| r.dst.to_string()).collect();
            if legacy_on_path {
                assert_eq!(dsts, ["0.0.0.0/0", "192.168.0.0/16", "::/0"], "{label}");
            } else {
                assert_eq!(dsts, ["0.0.0.0/0", "::/0", "192.168.0.0/16"], "{label}");
            }

            // `ips[].version` exactly in 0.3.x/0.4.0 output.
            let has_version = out["ips"]
                .as_array()
                .map(|ips| ips.iter().all(|ip| ip.get("version").is_some()))
                .unwrap_or(false);
            assert_eq!(
                has_version,
                to.result_shape() == ResultShape::Versioned,
                "{label}: {out}"
            );
            if to.result_shape() == ResultShape::Versioned {
                assert_eq!(out["ips"][1]["version"], "6", "{label}");
            }

            // 1.x-only fields survive only a 1.x -> 1.x trip.
            let r0 = &back.routes[0];
            assert_eq!(r0.mtu.is_some(), current_both, "{label}");
            assert_eq!(r0.table, current_both.then_some(100), "{label}");
            if !legacy_on_path {
                let eth0 = &back.interfaces[2];
                assert_eq!(eth0.mtu.is_some(), current_both, "{label}");
                assert_eq!(eth0.pci_id.is_some(), current_both, "{label}");
                assert_eq!(eth0.sandbox, "/run/netns/c1", "{label}");
                assert_eq!(eth0.extra.get("x-vendor"), Some(&json!(1)), "{label}");
            }

            // DNS and unknown top-level keys always pass through.
            assert_eq!(back.dns.domain.as_deref(), Some("example.org"), "{label}");
            assert_eq!(
                back.extra.get("x-extension"),
                Some(&json!({"keep": true})),
                "{label}"
            );
            assert!(out.get("dns").is_some(), "{label}");
        }
    }
}

#[test]
fn legacy_output_has_the_0_2_0_layout() {
    let (_, r) = CniResult::from_value(&sample(), Version::V1_1_0).unwrap();
    let v = r.to_value(Version::V0_2_0).unwrap();
    assert_eq!(v["ip4"]["ip"], "10.1.0.5/24");
    assert_eq!(v["ip4"]["gateway"], "10.1.0.1");
    assert_eq!(v["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(v["ip6"]["ip"], "fd00::5/64");
    assert_eq!(v["ip6"]["routes"][0]["dst"], "::/0");
    assert!(v.get("ips").is_none() && v.get("interfaces").is_none());
}

#[test]
fn legacy_cannot_express_a_result_without_ips() {
    let r = CniResult {
        interfaces: vec![Interface {
            name: "lo".into(),
            ..Interface::default()
        }],
        ..CniResult::default()
    };
    let e = r.to_value(Version::V0_2_0).unwrap_err();
    assert_eq!(e.code, 1);
    assert!(r.to_value(Version::V0_4_0).is_ok());
}

#[test]
fn result_without_cni_version_takes_the_default() {
    let v = json!({"ips": [{"version": "4", "address": "10.0.0.2/24"}]});
    let (ver, r) = CniResult::from_value(&v, Version::V0_4_0).unwrap();
    assert_eq!(ver, Version::V0_4_0);
    assert!(
        r.ips[0].extra.is_empty(),
        "version key is not kept as an extra"
    );
}

#[test]
fn bad_results_are_decode_errors_naming_the_field() {
    let cases = [
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
        json!({"cniVersion": "1.0.0", "routes": [{"dst": "nope/8"}]}),
        json!({"cniVersion": "0.2.0", "ip4": {"ip": 5}}),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": -1}]}),
        json!([1, 2]),
    ];
    for c in cases {
        let e = CniResult::from_value(&c, Version::V1_0_0).unwrap_err();
        assert_eq!(e.code, 6, "{c}: {}", e.msg);
    }
    let e = CniResult::from_value(
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "x"}]}),
        Version::V1_0_0,
    )
    .unwrap_err();
    assert!(e.msg.contains("ips[0].address"), "{}", e.msg);
    let e = CniResult::from_value(&json!({"cniVersion": "7.0.0"}), Version::V1_0_0).unwrap_err();
    assert_eq!(e.code, 1);
}

#[test]
fn keys_of_another_version_layout_are_not_kept_as_extras() {
    // Found by fuzzing: a 0.2.0 result carrying an `ips` key converted to 0.3.0 printed it.
    let v = json!({"cniVersion": "0.2.0", "ips": [{"version": "4", "address": "dst10.1.0.5/24"}],
                   "ip4": {"ip": "10.1.0.5/24"}, "routes": [{"dst": "::/0"}]});
    let (_, r) = CniResult::from_value(&v, Version::V0_2_0).unwrap();
    assert!(r.extra.is_empty(), "{:?}", r.extra);
    for to in Version::ALL {
        let out = r.to_value(to).unwrap();
        CniResult::from_value(&out, Version::V0_1_0).unwrap();
    }
    let (_, r) =
        CniResult::from_value(&json!({"cniVersion": "1.0.0", "ip4": 1}), Version::V1_0_0).unwrap();
    assert!(r.extra.is_empty());
}

#[test]
fn a_result_placed_after_a_prev_result_keeps_it_and_shifts_interface_indices() {
    let prev = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "tap0", "sandbox": "/ns"}],
        "ips": [{"address": "192.168.5.5/24", "interface": 0}],
        "routes": [{"dst": "192.168.6.0/24"}],
        "dns": {"nameservers": ["192.168.5.53"]}, "custom": "x"});
    let ours = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/ns"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}]});
    let (_, prev) = CniResult::from_value(&prev, Version::V1_1_0).unwrap();
    let (_, ours) = CniResult::from_value(&ours, Version::V1_1_0).unwrap();
    let r = ours
        .clone()
        .after(Some(prev.clone()))
        .to_value(Version::V1_1_0)
        .unwrap();
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["tap0", "br0", "veth1", "eth0"], "{r}");
    assert_eq!(r["ips"][0]["interface"], 0, "{r}");
    assert_eq!(r["ips"][1]["address"], "10.1.0.5/24", "{r}");
    assert_eq!(r["ips"][1]["interface"], 3, "{r}");
    assert_eq!(
        r["routes"],
        json!([{"dst": "192.168.6.0/24"}, {"dst": "0.0.0.0/0"}])
    );
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["192.168.5.53"]}),
        "prev's DNS: we have none"
    );
    assert_eq!(r["custom"], "x", "{r}");
    let ours_alone = ours.clone();
    let mut with_dns = ours;
    with_dns.dns.nameservers = vec!["10.1.0.53".into()];
    let r = with_dns
        .after(Some(prev))
        .to_value(Version::V1_1_0)
        .unwrap();
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["10.1.0.53"]}),
        "ours replaces it"
    );
    assert_eq!(ours_alone.clone().after(None), ours_alone);
}
