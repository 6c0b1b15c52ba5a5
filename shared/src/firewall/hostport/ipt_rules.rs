//! The iptables rules of the host port layout (see the module doc of [`super`]): restore input
//! and the parsing of `-S` lines. Pure functions, unit-tested without a kernel.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Forward, Mapping, Mark, Options, Proto};
#[cfg(test)]
use crate::firewall::ipt::del_input;
use crate::firewall::ipt::option_value;
use crate::firewall::{subnet_of, Tag};

/// The shared chain the PREROUTING and OUTPUT jumps lead to (the reference's name).
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// The shared chain POSTROUTING jumps to; masquerades marked connections.
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
pub const MASQ_JUMP_COMMENT: &str = "CNI portfwd requiring masquerade";
pub const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";

/// The attachment's own chain (23 bytes; iptables allows 28).
pub fn chain_name(tag: &Tag) -> String {
    format!("CNI-HP-{}", tag.hash_hex())
}

/// The chain that sets mark bit `bit`: the reference's name for its default bit 13.
pub fn setmark_chain(bit: u8) -> String {
    if bit == 13 {
        "CNI-HOSTPORT-SETMARK".to_string()
    } else {
        format!("CNI-HOSTPORT-SETMARK-{bit}")
    }
}

pub fn mark_value(bit: u8) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

fn host(ip: &IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
}

/// `[-d <hostIP>] -p tcp -m tcp --dport 8080`
fn match_of(m: &Mapping) -> String {
    let d = m
        .host_ip
        .map(|ip| format!("-d {} ", host(&ip)))
        .unwrap_or_default();
    let p = m.proto.as_str();
    format!("{d}-p {p} -m {p} --dport {}", m.host_port)
}

fn target(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v) => format!("[{v}]:{port}"),
        IpAddr::V4(v) => format!("{v}:{port}"),
    }
}

/// The restore input of one family's ADD: (re)fill the attachment's chain, remove the earlier
/// entries of this attachment (`old`, `-S` lines), add one entry per mapping to the shared
/// chain — hostIP-specific ones first, so they win over another attachment's wildcard.
///
/// `counted`: a re-ADD's earlier chain as listed with counters. A DNAT rule published again as
/// it was (same mapping, same destination) keeps its count, which DEL reads to know that the
/// connections it NATed need flushing (refilling the chain would reset it to zero).
pub fn add_input(
    tag: &Tag,
    f: &Forward,
    opts: &Options,
    old: &[String],
    counted: &[Rule],
) -> String {
    let chain = chain_name(tag);
    let c = format!("-m comment --comment \"{tag}\"");
    let mark_target = match &opts.mark {
        Mark::Bit(b) => setmark_chain(*b),
        Mark::External(name) => name.clone(),
    };
    let (ip, subnet) = (f.container.ip(), subnet_of(&f.container));
    let mut s = format!("*nat\n:{chain} - [0:0]\n");
    for l in old {
        s.push_str(&l.replacen("-A ", "-D ", 1));
        s.push('\n');
    }
    let conds = opts.conditions(f.v6()).join(" ");
    let conds = if conds.is_empty() {
        conds
    } else {
        format!(" {conds}")
    };
    for m in &f.mappings {
        let base = match_of(m);
        if opts.snat {
            if opts.masq_all {
                s.push_str(&format!("-A {chain} {base} {c} -j {mark_target}\n"));
            } else {
                s.push_str(&format!(
                    "-A {chain} -s {subnet} {base} {c} -j {mark_target}\n"
                ));
                if !f.v6() {
                    s.push_str(&format!(
                        "-A {chain} -s 127.0.0.1/32 {base} {c} -j {mark_target}\n"
                    ));
                }
            }
        }
        let kept = counted
            .iter()
            .filter(|r| r.to == Some((ip, m.container_port)))
            .filter(|r| (r.mapping.proto, r.mapping.host_port) == (m.proto, m.host_port))
            .find(|r| r.mapping.host_ip == m.host_ip)
            .and_then(|r| r.packets)
            .filter(|p| *p > 0)
            .map(|p| format!(" -c {p} 0"))
            .unwrap_or_default();
        s.push_str(&format!(
            "-A {chain} {base} {c}{kept} -j DNAT --to-destination {}\n",
            target(ip, m.container_port)
        ));
        let op = if m.host_ip.is_some() {
            format!("-I {DNAT_CHAIN} 1")
        } else {
            format!("-A {DNAT_CHAIN}")
        };
        s.push_str(&format!("{op} {base} {c}{conds} -j {chain}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// One rule of ours: the shared chain's entry, or the DNAT rule of an attachment's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The `-S` line.
    pub line: String,
    pub tag: String,
    pub mapping: Mapping,
    /// The jump target of an entry, `DNAT` for a DNAT rule.
    pub jump: String,
    /// The DNAT destination (DNAT rules only).
    pub to: Option<(IpAddr, u16)>,
    /// The packets the rule matched, when listed with counters. A NAT chain sees only each
    /// connection's first packet: for a DNAT rule, the connections it NATed.
    pub packets: Option<u64>,
}

fn parse_to(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some((ip.parse().ok()?, port.parse().ok()?))
}

/// Parse a tagged rule of ours (`-S` line); `None` for anything else.
pub fn parse_rule(line: &str) -> Option<Rule> {
    let tag = option_value(line, "--comment")?;
    if !tag.starts_with("cni:") {
        return None;
    }
    let host_ip = option_value(line, "-d").and_then(|d| {
        let net: IpNetwork = d.parse().ok()?;
        let full = if net.is_ipv4() { 32 } else { 128 };
        (net.prefix() == full).then_some(net.ip())
    });
    let to = option_value(line, "--to-destination").and_then(|t| parse_to(&t));
    let mapping = Mapping {
        host_ip,
        host_port: option_value(line, "--dport")?.parse().ok()?,
        container_port: to.map_or(0, |t| t.1),
        proto: Proto::parse(&option_value(line, "-p")?)?,
    };
    Some(Rule {
        line: line.to_string(),
        tag,
        mapping,
        jump: option_value(line, "-j")?,
        to,
        packets: option_value(line, "-c").and_then(|c| c.parse().ok()),
    })
}

/// Whether `other`'s entry keeps `m` from being published: the same key, or `m` on one address
/// where `other` publishes the port on every address.
pub fn blocks(other: &Mapping, m: &Mapping) -> bool {
    other.proto == m.proto
        && other.host_port == m.host_port
        && (other.host_ip == m.host_ip || other.host_ip.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(addr: &str, host_ip: Option<&str>) -> Forward {
        Forward {
            container: addr.parse().unwrap(),
            mappings: vec![Mapping {
                host_ip: host_ip.map(|s| s.parse().unwrap()),
                host_port: 8080,
                container_port: 80,
                proto: Proto::Tcp,
            }],
        }
    }

    #[test]
    fn restore_input() {
        let tag = Tag::new("net", "ctr", "eth0");
        let ch = chain_name(&tag);
        assert!(ch.len() <= 28);
        let c = "-m comment --comment \"cni:net/ctr/eth0\"";
        let s = add_input(
            &tag,
            &fwd("10.22.0.5/16", None),
            &Options::default(),
            &[],
            &[],
        );
        let m = "-p tcp -m tcp --dport 8080";
        assert_eq!(
            s,
            format!(
                "*nat\n:{ch} - [0:0]\n\
                 -A {ch} -s 10.22.0.0/16 {m} {c} -j CNI-HOSTPORT-SETMARK\n\
                 -A {ch} -s 127.0.0.1/32 {m} {c} -j CNI-HOSTPORT-SETMARK\n\
                 -A {ch} {m} {c} -j DNAT --to-destination 10.22.0.5:80\n\
                 -A CNI-HOSTPORT-DNAT {m} {c} -j {ch}\n\
                 COMMIT\n"
            )
        );
        let opts = Options {
            masq_all: true,
            mark: Mark::External("KUBE-MARK-MASQ".into()),
            conditions_v6: vec!["!".into(), "-s fd00::/8".into()],
            ..Options::default()
        };
        let old = ["-A CNI-HOSTPORT-DNAT -p tcp -j X".to_string()];
        let s = add_input(
            &tag,
            &fwd("fd00::5/64", Some("2001:db8::1")),
            &opts,
            &old,
            &[],
        );
        assert!(s.contains("-D CNI-HOSTPORT-DNAT -p tcp -j X\n"), "{s}");
        assert!(s.contains(&format!(
            "-A {ch} -d 2001:db8::1/128 {m} {c} -j KUBE-MARK-MASQ\n"
        )));
        assert!(s.contains("--to-destination [fd00::5]:80"), "{s}");
        assert!(s.contains(&format!(
            "-I CNI-HOSTPORT-DNAT 1 -d 2001:db8::1/128 {m} {c} ! -s fd00::/8 -j {ch}\n"
        )));
        assert!(!s.contains("127.0.0.1"));
        assert_eq!(setmark_chain(5), "CNI-HOSTPORT-SETMARK-5");
        assert_eq!(mark_value(13), "0x2000/0x2000");
        assert_eq!(
            del_input(&old, std::slice::from_ref(&ch)),
            format!("*nat\n-D CNI-HOSTPORT-DNAT -p tcp -j X\n-F {ch}\n-X {ch}\nCOMMIT\n")
        );
    }

    #[test]
    fn a_re_add_keeps_the_count_of_an_unchanged_dnat_rule() {
        let tag = Tag::new("net", "ctr", "eth0");
        let ch = chain_name(&tag);
        let c = "-m comment --comment cni:net/ctr/eth0";
        let earlier = |to: &str, packets: u64| {
            parse_rule(&format!(
                "-A {ch} -p tcp -m tcp --dport 8080 {c} -c {packets} 900 -j DNAT \
                 --to-destination {to}"
            ))
            .unwrap()
        };
        let input = |counted: &[Rule]| {
            add_input(
                &tag,
                &fwd("10.22.0.5/16", None),
                &Options::default(),
                &[],
                counted,
            )
        };
        let kept = input(&[earlier("10.22.0.5:80", 7)]);
        assert!(
            kept.contains("cni:net/ctr/eth0\" -c 7 0 -j DNAT --to-destination 10.22.0.5:80\n"),
            "{kept}"
        );
        for other in [earlier("10.22.0.6:80", 7), earlier("10.22.0.5:81", 7)] {
            assert!(
                !input(&[other]).contains(" -c "),
                "another destination: a new count"
            );
        }
        assert!(!input(&[earlier("10.22.0.5:80", 0)]).contains(" -c "));
        assert_eq!(earlier("10.22.0.5:80", 7).packets, Some(7));
    }

    #[test]
    fn parses_rules() {
        let l = "-A CNI-HOSTPORT-DNAT -d 192.0.2.1/32 -p udp -m udp --dport 53 -m comment \
                 --comment \"cni:n/c/eth0\" -j CNI-HP-0123456789abcdef";
        let r = parse_rule(l).unwrap();
        assert_eq!(r.tag, "cni:n/c/eth0");
        assert_eq!(r.mapping.host_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!((r.mapping.proto, r.mapping.host_port), (Proto::Udp, 53));
        assert_eq!(r.jump, "CNI-HP-0123456789abcdef");
        let d = "-A CNI-HP-1 -d 10.0.0.0/8 -p tcp -m tcp --dport 80 -m comment --comment \
                 cni:n/c/eth0 -j DNAT --to-destination [fd00::5]:8080";
        let r = parse_rule(d).unwrap();
        assert_eq!(
            r.mapping.host_ip, None,
            "a condition's network is no host IP"
        );
        assert_eq!(r.to, Some(("fd00::5".parse().unwrap(), 8080)));
        assert_eq!(r.mapping.container_port, 8080);
        assert!(parse_rule("-A X -m comment --comment \"other\" -j Y").is_none());
        let any = r.mapping;
        let one = Mapping {
            host_ip: Some("192.0.2.1".parse().unwrap()),
            ..any
        };
        assert!(blocks(&any, &one) && blocks(&any, &any) && !blocks(&one, &any));
    }
}
