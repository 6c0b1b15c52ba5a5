//! The nft text and kernel elements of the nftables masquerade layout (see the module doc of
//! [`super`]); GC reads our tables through [`super::nftrule`] and [`super::nftset`]. Pure functions, unit-tested without
//! a kernel.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::nftelem::{Data, Op};
use super::nftset::key;
use super::subnet_of;
use super::tag::{fnv1a, Tag};

pub const TABLE: &str = "inet cni_masq";
pub const TABLE_NAME: &str = "cni_masq";

pub fn map_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "masq4"
    } else {
        "masq6"
    }
}

/// The table, the two maps and the base chain. Idempotent (the base chain's rules are flushed
/// and re-added in the same transaction).
pub fn base_script() -> String {
    format!(
        "add table {TABLE}\n\
         add map {TABLE} masq4 {{ type ipv4_addr : verdict; }}\n\
         add map {TABLE} masq6 {{ type ipv6_addr : verdict; }}\n\
         add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {TABLE} postrouting\n\
         add rule {TABLE} postrouting ip saddr vmap @masq4\n\
         add rule {TABLE} postrouting ip6 saddr vmap @masq6\n"
    )
}

/// The chain shared by the attachments of one network with addresses in one subnet.
pub fn net_chain_name(tag: &Tag, addr: &IpNetwork) -> String {
    let key = format!("{} {}", tag.network_label(), subnet_of(addr));
    format!("net-{:016x}", fnv1a(key.as_bytes()))
}

/// Create (or refresh) the network chains the addresses need. Idempotent.
pub fn net_chains_script(tag: &Tag, addrs: &[IpNetwork]) -> String {
    let mut s = String::new();
    let mut seen = HashSet::new();
    for a in addrs {
        let name = net_chain_name(tag, a);
        if !seen.insert(name.clone()) {
            continue;
        }
        let subnet = subnet_of(a);
        let (proto, mcast) = if a.is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        s.push_str(&format!(
            "add chain {TABLE} {name}\n\
             flush chain {TABLE} {name}\n\
             add rule {TABLE} {name} {proto} daddr != {subnet} {proto} daddr != {mcast} \
             masquerade comment \"{} {subnet}\"\n",
            tag.network_label()
        ));
    }
    s
}

/// One `create element` per address (fails with EEXIST when an address has an entry).
pub fn create_ops(tag: &Tag, addrs: &[IpNetwork]) -> Vec<Op> {
    addrs
        .iter()
        .map(|a| {
            let (ip, chain) = (a.ip(), net_chain_name(tag, a));
            let text = format!("jump {chain}");
            Op::create(
                TABLE,
                map_of(&ip),
                key::addr(&ip),
                &ip.to_string(),
                Data::Jump(chain),
                &text,
                tag.as_str(),
            )
        })
        .collect()
}

pub fn delete_ops(ips: &[IpAddr]) -> Vec<Op> {
    ips.iter()
        .map(|ip| Op::delete(TABLE, map_of(ip), key::addr(ip), &ip.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nftelem;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn scripts() {
        let tag = Tag::new("mynet", "ctr1", "eth0");
        let addrs = [net("10.22.0.5/16"), net("fd00::5/64")];
        let c4 = net_chain_name(&tag, &addrs[0]);
        let c6 = net_chain_name(&tag, &addrs[1]);
        assert_ne!(c4, c6);
        assert_eq!(
            c4,
            net_chain_name(&Tag::new("mynet", "other", "eth1"), &addrs[0])
        );
        assert_eq!(
            nftelem::script(&create_ops(&tag, &addrs)),
            format!(
                "create element inet cni_masq masq4 {{ 10.22.0.5 comment \"cni:mynet/ctr1/eth0\" : jump {c4} }}\n\
                 create element inet cni_masq masq6 {{ fd00::5 comment \"cni:mynet/ctr1/eth0\" : jump {c6} }}\n"
            )
        );
        let chains = net_chains_script(&tag, &[addrs[0], net("10.22.0.6/16"), addrs[1]]);
        assert_eq!(chains.matches("add chain").count(), 2, "{chains}");
        assert!(chains.contains(&format!(
            "add rule inet cni_masq {c4} ip daddr != 10.22.0.0/16 ip daddr != 224.0.0.0/4 \
             masquerade comment \"cni:mynet 10.22.0.0/16\""
        )));
        assert!(chains.contains("ip6 daddr != fd00::/64 ip6 daddr != ff00::/8 masquerade"));
        assert_eq!(
            nftelem::script(&delete_ops(&[addrs[1].ip()])),
            "delete element inet cni_masq masq6 { fd00::5 }\n"
        );
        assert!(base_script().contains("ip saddr vmap @masq4"));
    }
}
