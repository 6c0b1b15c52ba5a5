//! The nft text and kernel elements of the nftables masquerade layout (see the module doc of
//! [`super`]), and the parsing of its JSON listings (GC). Pure functions, unit-tested without a
//! kernel.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

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

/// The first `comment "..."` in nft text output.
pub fn comment_in(text: &str) -> Option<String> {
    let rest = &text[text.find("comment \"")? + 9..];
    Some(rest[..rest.find('"')?].to_string())
}

/// One element of a masquerade map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ip: IpAddr,
    pub comment: String,
    /// The chain it jumps to.
    pub target: String,
}

/// The elements of the maps in a `list map` or `list table` JSON document; keys that are not
/// addresses are skipped.
pub fn elements_of(v: &Value) -> Vec<Element> {
    let mut out = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let elems = item
            .get("map")
            .and_then(|m| m.get("elem"))
            .and_then(Value::as_array);
        for pair in elems.into_iter().flatten() {
            let key = pair.get(0).unwrap_or(pair);
            let (val, comment) = match key.get("elem") {
                Some(e) => (
                    e.get("val").and_then(Value::as_str),
                    e.get("comment").and_then(Value::as_str).unwrap_or(""),
                ),
                None => (key.as_str(), ""),
            };
            let target = pair
                .get(1)
                .and_then(|v| v.get("jump"))
                .and_then(|j| j.get("target"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(ip) = val.and_then(|s| s.parse().ok()) {
                out.push(Element {
                    ip,
                    comment: comment.to_string(),
                    target: target.to_string(),
                });
            }
        }
    }
    out
}

/// The network chains of `tag`'s network in a `list table` JSON document (found by their
/// rule's comment, `"<network label> <subnet>"`).
pub fn net_chains_of(v: &Value, network_label: &str) -> Vec<String> {
    let prefix = format!("{network_label} ");
    let mut out: Vec<String> = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for rule in items.into_iter().flatten().filter_map(|i| i.get("rule")) {
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if chain.starts_with("net-")
            && comment.starts_with(&prefix)
            && !out.iter().any(|c| c == chain)
        {
            out.push(chain.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nftelem;
    use serde_json::json;

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

    #[test]
    fn parses_listings() {
        let text = "table inet cni_masq {\n\tmap masq4 {\n\t\telements = { 10.0.0.5 comment \"cni:n/c/eth0\" : jump net-1 }\n\t}\n}\n";
        assert_eq!(comment_in(text).as_deref(), Some("cni:n/c/eth0"));
        assert_eq!(comment_in("elements = { 10.0.0.5 : jump x }"), None);
        let v = json!({"nftables": [{"metainfo": {}}, {"map": {"name": "masq4", "elem": [
            [{"elem": {"val": "10.0.0.5", "comment": "cni:n/c/eth0"}}, {"jump": {"target": "x"}}],
            ["10.0.0.6", {"jump": {"target": "x"}}],
            [{"elem": {"val": {"prefix": {}}}}, {"jump": {"target": "x"}}]
        ]}}]});
        let e = elements_of(&v);
        let ips: Vec<(String, &str, &str)> = e
            .iter()
            .map(|e| (e.ip.to_string(), e.comment.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(
            ips,
            vec![
                ("10.0.0.5".to_string(), "cni:n/c/eth0", "x"),
                ("10.0.0.6".to_string(), "", "x")
            ]
        );
        let table = json!({"nftables": [
            {"chain": {"name": "net-1"}},
            {"rule": {"chain": "net-1", "comment": "cni:n 10.0.0.0/24"}},
            {"rule": {"chain": "net-2", "comment": "cni:n2 10.0.1.0/24"}},
            {"rule": {"chain": "postrouting"}}
        ]});
        assert_eq!(net_chains_of(&table, "cni:n"), ["net-1"]);
        assert!(elements_of(&json!({"garbage": 1})).is_empty());
    }
}
