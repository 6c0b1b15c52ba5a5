use super::*;
use serde_json::{json, Value};

fn conf(v: Value, maps: Option<Value>) -> Result<Config> {
    let c: PortMapConf = cni_shared::spec::decode_config(&v)?;
    let entries = match maps {
        Some(m) => Some(cni_shared::spec::decode_value(
            &m,
            "runtimeConfig.portMappings",
        )?),
        None => None,
    };
    from_conf(c, entries)
}

fn err(v: Value, maps: Option<Value>) -> CniError {
    conf(v, maps).unwrap_err()
}

#[test]
fn defaults() {
    let c = conf(json!({}), None).unwrap();
    assert_eq!(c.backend, Backend::Auto);
    assert_eq!(c.opts, Options::default());
    assert!(c.opts.snat && !c.opts.masq_all);
    assert_eq!(c.opts.mark, Mark::Bit(13));
    assert_eq!(c.mappings, None);
    let c = conf(json!({}), Some(json!([]))).unwrap();
    assert_eq!(c.mappings, Some(vec![]));
}

#[test]
fn every_key() {
    let c = conf(
        json!({"snat": false, "masqAll": true, "backend": "iptables", "markMasqBit": 5,
               "conditionsV4": ["-s", "10.0.0.0/8"], "conditionsV6": ["! -d fd00::/8"]}),
        Some(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "192.0.2.1"},
            {"hostPort": 9, "containerPort": 9, "protocol": "sctp", "hostIP": "::"},
            {"hostPort": 10, "containerPort": 10}
        ])),
    )
    .unwrap();
    assert_eq!(c.backend, Backend::Iptables);
    assert!(!c.opts.snat && c.opts.masq_all);
    assert_eq!(c.opts.mark, Mark::Bit(5));
    assert_eq!(c.opts.conditions_v4, ["-s", "10.0.0.0/8"]);
    let m = c.mappings.unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].proto, Proto::Tcp);
    assert_eq!(m[1].host_ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(m[3].proto, Proto::Tcp, "protocol defaults to tcp");
    let c = conf(
        json!({"backend": "iptables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
        None,
    )
    .unwrap();
    assert_eq!(c.opts.mark, Mark::External("KUBE-MARK-MASQ".into()));
}

#[test]
fn options_of_the_other_backend() {
    let e = err(json!({"backend": "nftables", "markMasqBit": 3}), None);
    assert_eq!(e.code, 7);
    assert!(e.msg.starts_with("markMasqBit: "), "{}", e.msg);
    let e = err(
        json!({"backend": "nftables", "externalSetMarkChain": "X", "markMasqBit": 1}),
        None,
    );
    assert!(
        e.msg.starts_with("markMasqBit, externalSetMarkChain: only"),
        "{}",
        e.msg
    );
    let e = err(
        json!({"backend": "iptables", "externalSetMarkChain": "X", "markMasqBit": 1}),
        None,
    );
    assert!(e.msg.contains("not both"), "{}", e.msg);
    let e = err(json!({"backend": "pf"}), None);
    assert!(e.msg.starts_with("backend: "), "{}", e.msg);
}

#[test]
fn without_a_backend_a_config_for_the_reference_iptables_default_keeps_iptables() {
    for v in [
        json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
        json!({"markMasqBit": 14}),
        json!({"conditionsV4": ["!", "-s", "192.0.2.0/24"]}),
        json!({"conditionsV6": ["-d", "2001:db8::/32"]}),
    ] {
        assert_eq!(
            conf(v.clone(), None).unwrap().backend,
            Backend::Iptables,
            "{v}"
        );
    }
    for v in [
        json!({}),
        json!({"conditionsV4": ["ip saddr != 192.0.2.0/24"]}),
        json!({"conditionsV6": ["ip6 daddr != fd00::/8", "meta l4proto tcp"]}),
    ] {
        assert_eq!(conf(v.clone(), None).unwrap().backend, Backend::Auto, "{v}");
    }
    // The conditions of an automatic backend are nft's.
    let e = err(json!({"conditionsV4": ["x; flush ruleset"]}), None);
    assert!(e.msg.contains("nftables condition"), "{}", e.msg);
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        (
            json!({"backend": "iptables", "markMasqBit": 32}),
            None,
            "markMasqBit: ",
        ),
        (
            json!({"backend": "iptables", "externalSetMarkChain": "a b"}),
            None,
            "externalSetMarkChain: ",
        ),
        (
            json!({"conditionsV4": ["x; flush ruleset"]}),
            None,
            "conditionsV4[0]: ",
        ),
        (json!({"snat": "yes"}), None, "snat: "),
        (
            json!({}),
            Some(json!([{"hostPort": 0, "containerPort": 80}])),
            "runtimeConfig.portMappings[0].hostPort: ",
        ),
        (
            json!({}),
            Some(json!([{"hostPort": 1, "containerPort": 65536}])),
            "runtimeConfig.portMappings[0].containerPort: ",
        ),
        (
            json!({}),
            Some(json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}])),
            "runtimeConfig.portMappings[0].protocol: ",
        ),
        (
            json!({}),
            Some(json!([{"hostPort": 1, "containerPort": 1, "hostIP": "x"}])),
            "runtimeConfig.portMappings[0].hostIP: ",
        ),
        (
            json!({}),
            Some(json!([{"hostPort": 1, "containerPort": 1},
                         {"hostPort": 1, "containerPort": 2, "hostIP": "0.0.0.0"}])),
            "runtimeConfig.portMappings[1]: ",
        ),
    ];
    for (c, maps, want) in cases {
        let e = err(c.clone(), maps);
        assert_eq!(e.code, 7, "{c}");
        assert!(e.msg.starts_with(want), "{c}: {}", e.msg);
    }
    // Same port, other protocol or other hostIP: fine.
    conf(
        json!({}),
        Some(json!([{"hostPort": 1, "containerPort": 1},
                     {"hostPort": 1, "containerPort": 1, "protocol": "udp"},
                     {"hostPort": 1, "containerPort": 2, "hostIP": "192.0.2.1"}])),
    )
    .unwrap();
}
