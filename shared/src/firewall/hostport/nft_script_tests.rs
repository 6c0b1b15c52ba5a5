use super::*;
use crate::firewall::nftelem;

/// [`create_ops`] as an nft script.
fn create_script(tag: &Tag, fwds: &[Forward], opts: &Options) -> String {
    nftelem::script(&create_ops(tag, fwds, opts))
}

fn fwd(addr: &str, maps: &[(Option<&str>, u16, u16, Proto)]) -> Forward {
    Forward {
        container: addr.parse().unwrap(),
        mappings: maps
            .iter()
            .map(|(ip, hp, cp, proto)| Mapping {
                host_ip: ip.map(|s| s.parse().unwrap()),
                host_port: *hp,
                container_port: *cp,
                proto: *proto,
            })
            .collect(),
    }
}

#[test]
fn claims_encode_and_decode() {
    let c = Claim {
        v6: false,
        host_ip: Some("192.0.2.1".parse().unwrap()),
        proto: Proto::Udp,
        port: 8080,
    };
    assert_eq!(c.claims_map(), "claimsip4");
    assert_eq!(c.dnat_map(0), "dnatip4");
    assert_eq!(c.dnat_map(0xab), "dnatip4-000000ab");
    assert_eq!(c.key_text(), "192.0.2.1 . udp . 8080");
    let k = c.key_bytes();
    assert_eq!(k, vec![192, 0, 2, 1, 17, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    assert_eq!(Claim::decode(false, true, &k), Some(c));
    assert_eq!(Claim::decode(false, false, &k), None);
    let any6 = Claim {
        v6: true,
        host_ip: None,
        proto: Proto::Sctp,
        port: 1,
    };
    assert_eq!(any6.claims_map(), "claims6");
    assert_eq!(Claim::decode(true, false, &any6.key_bytes()), Some(any6));
    assert_eq!(
        decode_target(&[10, 0, 0, 5, 0, 80, 0, 0]),
        Some(("10.0.0.5".parse().unwrap(), 80))
    );
    assert_eq!(decode_target(&[1, 2]), None);
    assert_eq!(decode_gid(&7u32.to_ne_bytes()), 7);
}

#[test]
fn groups() {
    assert_eq!(group_id(&[]), 0);
    let g = group_id(&["ip saddr 10.0.0.0/8".to_string()]);
    assert_ne!(g, 0);
    let s = group_script(false, &["ip saddr 10.0.0.0/8".to_string()], true);
    let sx = format!("-{g:08x}");
    assert!(s.contains(&format!(
        "add rule inet cni_hostport pre4{sx} ip saddr 10.0.0.0/8 fib daddr type local dnat ip to \
         meta l4proto . th dport map @dnat4{sx}\n"
    )));
    assert_eq!(
        group_chains(false, g),
        [format!("pre4{sx}"), format!("out4{sx}")]
    );
    let s6 = group_script(true, &[], true);
    assert!(s6.contains(
        "add map inet cni_hostport dnat6 { type inet_proto . inet_service : ipv6_addr . inet_service; counter; }\n"
    ));
    assert!(!group_script(true, &[], false).contains("counter"));
    assert!(s6.contains(
        "add rule inet cni_hostport out6 ip6 daddr != ::1 fib daddr type local dnat ip6 to \
         meta l4proto . th dport map @dnat6\n"
    ));
    assert!(s6.contains(
        "add rule inet cni_hostport pre6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnatip6\n"
    ));
    assert!(!s6.contains("!= ::1 dnat ip6 to ip6 daddr"));
}

#[test]
fn add_script() {
    let tag = Tag::new("net", "ctr", "eth0");
    let fwds = [
        fwd(
            "10.22.0.5/16",
            &[
                (None, 8080, 80, Proto::Tcp),
                (Some("192.0.2.1"), 53, 5353, Proto::Udp),
            ],
        ),
        fwd("fd00::5/64", &[(None, 8080, 80, Proto::Tcp)]),
    ];
    let opts = Options::default();
    let s = create_script(&tag, &fwds, &opts);
    let hp4 = hp_chain_name(&tag, &fwds[0].container, false);
    let expect = format!(
        "create element inet cni_hostport claims4 {{ tcp . 8080 comment \"cni:net/ctr/eth0\" : 0x00000000 }}\n\
         create element inet cni_hostport dnat4 {{ tcp . 8080 comment \"cni:net/ctr/eth0\" : 10.22.0.5 . 80 }}\n\
         create element inet cni_hostport claimsip4 {{ 192.0.2.1 . udp . 53 comment \"cni:net/ctr/eth0\" : 0x00000000 }}\n\
         create element inet cni_hostport dnatip4 {{ 192.0.2.1 . udp . 53 comment \"cni:net/ctr/eth0\" : 10.22.0.5 . 5353 }}\n\
         create element inet cni_hostport hairpin4 {{ 10.22.0.5 comment \"cni:net/ctr/eth0\" : jump {hp4} }}\n"
    );
    assert!(s.starts_with(&expect), "{s}");
    assert!(s.contains("dnat6 { tcp . 8080 comment \"cni:net/ctr/eth0\" : fd00::5 . 80 }"));
    let no_snat = Options {
        snat: false,
        ..Options::default()
    };
    assert!(!create_script(&tag, &fwds, &no_snat).contains("hairpin"));
    let setup = setup_script(&tag, &fwds, &opts, true);
    for want in [
        "add table inet cni_hostport",
        "pre4",
        "out6",
        &hp4,
        "ip saddr 127.0.0.0/8",
    ] {
        assert!(setup.contains(want), "{want}: {setup}");
    }
    let all = hp_chain_script(&tag, &fwds[1].container, true);
    assert!(
        all.contains(" masquerade comment \"cni:net fd00::/64 all\""),
        "{all}"
    );
    assert!(!all.contains("saddr"));
    assert_ne!(hp_chain_name(&tag, &fwds[0].container, true), hp4);
    assert_eq!(
        delete_hairpin(&"fd00::5".parse().unwrap()).text,
        "delete element inet cni_hostport hairpin6 { fd00::5 }\n"
    );
    let ops = create_ops(&tag, &fwds, &opts);
    assert_eq!(ops[0].key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    assert_eq!(ops[1].data, Data::Value(vec![10, 22, 0, 5, 0, 80, 0, 0]));
    assert_eq!(ops[4].data, Data::Jump(hp4.clone()));
    assert_eq!(ops[4].comment.as_deref(), Some("cni:net/ctr/eth0"));
}
